// Package docs holds the tests of the README and of the pages under docs/:
// every Go block is a verbatim excerpt of a Go file that the build compiles
// (the snippets of this package's tests among them, which also run), every
// relative link resolves, every path a shell block names exists, and the
// README stays a five-minute read.
package docs
