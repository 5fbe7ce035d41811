package main

import "syscall"

// scenarioProcAttr makes the kernel kill a process of the scenario if the
// test binary dies, so that a crashed test leaves none behind.
func scenarioProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
