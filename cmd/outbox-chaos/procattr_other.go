//go:build unix && !linux

package main

import "syscall"

// procAttr: without Pdeathsig, relays of a run that crashed must be
// stopped by hand.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
