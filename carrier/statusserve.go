package carrier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// statusSocket is the Unix socket a run holding the buffer at dir answers
// status on; it lives in the buffer directory (0700), so only its owner
// can ask.
func statusSocket(dir string) string { return filepath.Join(dir, "status.sock") }

// ServeStatus answers ReadStatus(b) on the buffer's status socket, so that
// `messor status` answers while this run holds the buffer (AskStatus). b
// must be open for writing (the run lock is held, so no other run serves
// or removes the socket). stop ends the service and removes the socket.
func ServeStatus(b *Buffer) (stop func(), err error) {
	path := statusSocket(b.Dir())
	os.Remove(path) // left by a run that died; ours now, under the lock
	l, err := net.Listen("unix", path)
	if err != nil {
		return func() {}, fmt.Errorf("buffer %s: serving status: %w", b.Dir(), err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				answerStatus(b, conn)
			}()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.Close() // removes the socket file
			wg.Wait()
		})
	}, nil
}

// answerStatus writes b's status to conn as JSON and closes it.
func answerStatus(b *Buffer, conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	st, err := ReadStatus(b)
	if err != nil {
		json.NewEncoder(conn).Encode(statusAnswer{Err: err.Error()})
		return
	}
	json.NewEncoder(conn).Encode(statusAnswer{Status: st})
}

// statusAnswer is what the status socket sends.
type statusAnswer struct {
	Status *Status `json:"status,omitempty"`
	Err    string  `json:"error,omitempty"`
}

// maxStatusAnswer bounds the answer read from the socket.
const maxStatusAnswer = 256 << 20

// AskStatus asks the run holding the buffer at dir for the buffer's status.
func AskStatus(ctx context.Context, dir string) (*Status, error) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "unix", statusSocket(dir))
	if err != nil {
		return nil, fmt.Errorf("buffer %s: asking the running messor for status: %w", dir, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var a statusAnswer
	if err := json.NewDecoder(io.LimitReader(conn, maxStatusAnswer)).Decode(&a); err != nil {
		return nil, fmt.Errorf("buffer %s: reading status from the running messor: %w", dir, err)
	}
	if a.Err != "" || a.Status == nil {
		return nil, fmt.Errorf("buffer %s: the running messor: %w", dir, errors.New(a.Err))
	}
	return a.Status, nil
}

// ReadStatusAnyway reads the status of the buffer at dir whether or not a
// run holds it: from the index when it is free (limit is then the limit
// to show), else from the running messor, which reports its own limit.
func ReadStatusAnyway(ctx context.Context, dir string, limit int64) (*Status, error) {
	buf, err := OpenBufferReadOnly(dir)
	if errors.Is(err, ErrBufferBusy) {
		st, aerr := AskStatus(ctx, dir)
		if aerr != nil {
			return nil, fmt.Errorf("%w; %w", err, aerr)
		}
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	defer buf.Close()
	st, err := ReadStatus(buf)
	if err != nil {
		return nil, err
	}
	st.Limit = limit
	return st, nil
}
