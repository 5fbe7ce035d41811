//go:build !linux

package main

import "syscall"

// scenarioProcAttr: no parent-death signal outside Linux.
func scenarioProcAttr() *syscall.SysProcAttr { return nil }
