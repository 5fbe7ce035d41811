package multiproc

import "syscall"

// procAttr makes the kernel kill a relay process if the test binary dies,
// so that a crashed test leaves no relay behind.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
