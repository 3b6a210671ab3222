package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDevAndWatch runs `meshkit dev` and `meshkit watch` as the README says: the watch
// shows the examples, then a change made with `meshkit apply` (here: delete). How fast is
// measured by benchmarks (node's Propagation and WatchFanout), not here: under the race
// detector beside the other tests this took 1.0–1.1 s as often as not.
func TestDevAndWatch(t *testing.T) {
	out := startDev(t, 2)
	grpcAddr := regexp.MustCompile(`seed admin gRPC\s+(\S+)`).FindStringSubmatch(out.String())[1]
	agents := regexp.MustCompile(`OmniRelay watch (\S+)`).FindAllStringSubmatch(out.String(), -1)
	if len(agents) != 2 {
		t.Fatalf("dev printed %d agents:\n%s", len(agents), out.String())
	}

	wctx, wcancel := context.WithCancel(context.Background())
	wout := &syncBuffer{}
	w := &app{ctx: wctx, stdout: wout, stderr: wout, now: time.Now}
	wdone := make(chan int, 1)
	go func() { wdone <- w.main([]string{"watch", "--addr", agents[1][1], "--node-id", "dev:web-1"}) }()
	defer func() {
		wcancel()
		<-wdone
	}()
	lines := func() []watchLine {
		var ls []watchLine
		for _, l := range strings.Split(strings.TrimSpace(wout.String()), "\n") {
			var wl watchLine
			if json.Unmarshal([]byte(l), &wl) == nil {
				ls = append(ls, wl)
			}
		}
		return ls
	}
	waitUntil := func(what string, within time.Duration, cond func([]watchLine) bool) time.Duration {
		start := time.Now()
		for !cond(lines()) {
			if time.Since(start) > within {
				t.Fatalf("%s: not within %s; watch printed:\n%s\ndev:\n%s", what, within, wout.String(), out.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitUntil("the examples", 30*time.Second, func(ls []watchLine) bool {
		return len(ls) > 0 && ls[len(ls)-1].Version == "1" && ls[len(ls)-1].Resources == 13
	})
	if code, msg := cli(t, "delete", "AuthzPolicy", "deny-admin-paths", "--namespace", "shop", "--seed", grpcAddr); code != exitOK {
		t.Fatalf("delete: %s", msg)
	}
	took := waitUntil("the change", 5*time.Second, func(ls []watchLine) bool {
		return ls[len(ls)-1].Version == "2" && ls[len(ls)-1].Resources == 12
	})
	t.Logf("the change reached the watch after %s", took)
}

// TestDevRefusesNonLoopback: dev's seed lets anonymous callers administer, so it must not
// listen where other machines reach it; the refusal names the address and exits 2.
func TestDevRefusesNonLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"--grpc-addr", "0.0.0.0:0"},
		{"--http-addr", "0.0.0.0:0"},
		{"--grpc-addr", "192.0.2.1:17400"},
	} {
		code, out := cli(t, append([]string{"dev", "--data", t.TempDir()}, args...)...)
		if code != exitUsage || !strings.Contains(out, "only listens on loopback") || !strings.Contains(out, args[1]) {
			t.Errorf("dev %v: exit %d\n%s", args, code, out)
		}
	}
}

// startDev runs `meshkit dev` with agents and extra flags, on free loopback ports, until it
// prints its addresses, and stops it when the test ends, failing the test unless it exits
// 0. It returns what dev prints.
func startDev(t *testing.T, agents int, extra ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	dev := &app{ctx: ctx, stdout: out, stderr: out, now: time.Now}
	args := append([]string{"dev", "--agents", strconv.Itoa(agents), "--data", t.TempDir(), "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--southbound-port", "0"}, extra...)
	done := make(chan int, 1)
	go func() { done <- dev.main(args) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("dev exited %d:\n%s", code, out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Watch what a node receives") {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out
}
