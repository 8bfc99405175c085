package decay

import (
	"math"
	"testing"
	"time"
)

func TestCount(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := Count{Score: 10, At: now}
	if v := c.Value(now.Add(time.Minute), time.Minute); math.Abs(v-10/math.E) > 1e-9 {
		t.Errorf("after one time constant: %v, want 10/e", v)
	}
	if v := c.Value(now.Add(-time.Second), time.Minute); v != 10 {
		t.Errorf("before At: %v, want 10", v)
	}
	c = c.Add(now.Add(time.Minute), time.Minute, 1)
	if math.Abs(c.Score-(10/math.E+1)) > 1e-9 || !c.At.Equal(now.Add(time.Minute)) {
		t.Errorf("Add: %+v, want 10/e+1 at one minute", c)
	}
	if v := (Count{}).Value(now, time.Minute); v != 0 {
		t.Errorf("zero count: %v", v)
	}
}
