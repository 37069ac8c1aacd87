package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a child process of the bench (the consumer, or a bare part),
// with its output in a log file.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // what Wait returned, once done is closed
}

// startChild starts argv with env added to this process's environment
// (later entries win), its stdout and stderr going to logPath, or to
// stdout when given.
func startChild(name string, argv, env []string, logPath string, stdout *bytes.Buffer) (*child, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("bench: no command for the %s process", name)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %s log: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start the %s process (%s): %w", name, argv[0], err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

// pid returns the process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited returns an error saying that the process ended, with the end of
// its log, if it has; nil while it runs.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("bench: the %s process exited (%v)%s", c.name, c.err, c.logTail())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for the process to exit, at most grace, then
// kills it. It returns an error when the process failed or had to be
// killed.
func (c *child) stop(grace time.Duration) error {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("bench: the %s process did not stop within %s of SIGTERM: killed%s", c.name, grace, c.logTail())
		}
	}
	if c.err != nil {
		return fmt.Errorf("bench: the %s process: %w%s", c.name, c.err, c.logTail())
	}
	return nil
}

// logTail returns the last lines of the process's log, for errors.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "; its log (" + c.logPath + ") ends:\n" + strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go runs on).
const userHZ = 100

// procCPU returns the CPU time (user + system, every thread) a process has
// used so far, from /proc/<pid>/stat, to 1/USER_HZ.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: CPU time of process %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line.
func parseStatCPU(b []byte) (time.Duration, error) {
	f, err := statFields(b)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc stat: %q is not a tick count", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// statFields returns the fields of a /proc/<pid>/stat line after the
// command name (field 3, the state, first), at least 13 of them. The
// command name, field 2, is in parentheses and may hold spaces and
// parentheses, so fields are counted after the last ')'.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("bench: /proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("bench: /proc stat: %d fields after the command name, want at least 13", len(f))
	}
	return f, nil
}

// pfKthread is the flag of a kernel thread in /proc/<pid>/stat (field 9).
const pfKthread = 0x00200000

// kernelCPU returns the CPU time kernel threads (writeback, block I/O,
// workqueues...) and interrupts have used since boot, or 0: part of the
// machine's busy time that no process's own CPU time shows.
func kernelCPU() time.Duration {
	var total time.Duration
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		f, err := statFields(b)
		if err != nil {
			continue
		}
		if flags, _ := strconv.ParseUint(f[6], 10, 64); flags&pfKthread == 0 {
			continue
		}
		if cpu, err := parseStatCPU(b); err == nil {
			total += cpu
		}
	}
	return total + procStatTicks(6, 7) // irq, softirq
}

// procMem returns the resident set of a process now (VmRSS) and at its peak
// (VmHWM), in bytes, from /proc/<pid>/status ("self" for this process).
func procMem(pid string) (rss, peak int64, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: memory of process %s: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak, nil
}

// machineBusy returns the CPU time every CPU of the machine has spent busy
// since boot (/proc/stat: user, nice, system, irq, softirq, steal; not
// idle or iowait), or 0.
func machineBusy() time.Duration { return procStatTicks(1, 2, 3, 6, 7, 8) }

// procStatTicks returns the sum of the given fields of /proc/stat's "cpu"
// line (1 user, 2 nice, 3 system, 4 idle, 5 iowait, 6 irq, 7 softirq,
// 8 steal), or 0.
func procStatTicks(fields ...int) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range fields {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// loadAverage returns the 1-minute load average, or 0.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	l, _ := strconv.ParseFloat(f[0], 64)
	return l
}
