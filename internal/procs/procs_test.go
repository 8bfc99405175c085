package procs

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestNext walks the controller through a load that rises past what its
// Ps can carry and falls again.
func TestNext(t *testing.T) {
	c := New(Options{Max: 3, CPU: func() time.Duration { return 0 }, Set: func(int) {}})
	cur := 1
	step := func(load float64, want int) {
		t.Helper()
		cur = c.next(cur, load)
		if cur != want {
			t.Fatalf("load %.2f: %d procs, want %d", load, cur, want)
		}
	}
	step(0.2, 1)  // light: one P
	step(0.74, 1) // just under 75 % of one P
	step(0.8, 2)  // one P kept busy: one more
	step(1.0, 2)  // 50 % of two: stays
	step(1.6, 3)  // two kept busy
	step(2.9, 3)  // at the ceiling
	// Falling: one P fewer only after downAfter windows in a row that the
	// remaining two would have carried at under 50 %.
	for i := 0; i < downAfter-1; i++ {
		step(0.5, 3)
	}
	step(1.2, 3) // a busy window breaks the streak
	for i := 0; i < downAfter-1; i++ {
		step(0.5, 3)
	}
	step(0.5, 2)
	for i := 0; i < downAfter-1; i++ {
		step(0.3, 2)
	}
	step(0.3, 1)
	step(0, 1) // never below one
}

// TestRun drives Run with a fake clock and a process whose CPU use
// follows a load schedule, and checks the sizes it sets.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		load := 0.1 // cores
		var used time.Duration
		last := time.Now()
		cpu := func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			used += time.Duration(load * float64(now.Sub(last)))
			last = now
			return used
		}
		setLoad := func(l float64) {
			cpu() // account the time so far at the old load
			mu.Lock()
			load = l
			mu.Unlock()
		}
		var sets []int
		c := New(Options{Max: 2, Interval: time.Second, CPU: cpu, Set: func(n int) { sets = append(sets, n) }})
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)

		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		if c.Procs() != 1 {
			t.Fatalf("light load: %d procs, want 1", c.Procs())
		}
		setLoad(0.95) // one P kept busy
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c.Procs() != 2 {
			t.Fatalf("one P kept busy for 2 s: %d procs, want 2", c.Procs())
		}
		setLoad(0.2)
		time.Sleep(time.Duration(downAfter-2) * time.Second)
		synctest.Wait()
		if c.Procs() != 2 {
			t.Fatalf("shrank after %d light windows, want %d", downAfter-2, downAfter)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if c.Procs() != 1 {
			t.Fatalf("light load again for %d s: %d procs, want 1", downAfter+1, c.Procs())
		}
		cancel()
		synctest.Wait()
		if want := []int{1, 2, 1}; len(sets) != len(want) || sets[0] != 1 || sets[1] != 2 || sets[2] != 1 {
			t.Fatalf("sizes set: %v, want %v", sets, want)
		}
	})
}

// TestRunSingleCore checks that a one-core ceiling sets one P and stops.
func TestRunSingleCore(t *testing.T) {
	var sets []int
	c := New(Options{Max: 1, CPU: func() time.Duration { return 0 }, Set: func(n int) { sets = append(sets, n) }})
	c.Run(context.Background()) // returns at once
	if len(sets) != 1 || sets[0] != 1 {
		t.Fatalf("sizes set: %v, want [1]", sets)
	}
}
