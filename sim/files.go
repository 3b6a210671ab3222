package sim

import "syscall"

// openFileLimit is the process's limit on open files (0 if unknown). Go raises the soft
// limit to the hard one at start.
func openFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// closeLKGFiles says whether agents must close their last-known-good slot files after
// each write: they keep two open each otherwise, as a real agent does, and a process
// hosting this many agents would exhaust its limit (virtual-10k: 20,000 slot files under
// this machine's limit of 20,000). Half the limit is left for everything else.
func closeLKGFiles(agents int, limit uint64) bool {
	return limit != 0 && uint64(2*agents) > limit/2
}
