package main

import "syscall"

// procAttr makes the kernel kill a relay if this process dies, so that a
// crashed or killed chaos run leaves no relay behind.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
