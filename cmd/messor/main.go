// Command messor is sneakernet file sync: a carrier (phone, laptop) picks up
// files waiting in hosts' outboxes over SSH/SFTP, carries them in a local
// buffer, and drops them into each destination's inbox when it reaches that
// host. See README.md; the work is done by packages carrier, agent,
// discovery and protocol, this command only wires them to flags and output.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/messor-sync/messor/internal/gcpace"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // a transfer failed or a host was refused
	exitUsage   = 2 // bad usage or configuration
	exitSignals = 130
)

// exitError carries an exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...)}
}

func main() {
	// The first SIGINT or SIGTERM cancels the run, which stops cleanly
	// (everything resumable); a second one kills at once.
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		signal.Stop(sigs)
		cancel(interrupted{sig})
	}()
	gcpace.Start(os.Getenv)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// interrupted is the cause of a run cancelled by a signal.
type interrupted struct{ sig os.Signal }

func (i interrupted) Error() string { return "interrupted by " + i.sig.String() }

// signalExit is the conventional exit status after sig: 128 + its number.
func signalExit(ctx context.Context) int {
	var i interrupted
	if errors.As(context.Cause(ctx), &i) {
		if s, ok := i.sig.(syscall.Signal); ok {
			return 128 + int(s)
		}
	}
	return exitSignals
}

// run executes messor with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "messor: interrupted; everything done so far is kept and the rest resumes next time")
		return signalExit(ctx)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "messor:", ee.err)
		}
		return ee.code
	}
	// cobra's own errors are usage errors (unknown flag, bad args).
	fmt.Fprintln(stderr, "messor:", err)
	fmt.Fprintln(stderr, "Run 'messor --help' for usage.")
	return exitUsage
}
