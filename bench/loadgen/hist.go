package loadgen

import (
	"math"
	"time"
)

// histBucketsPerOctave sets the histogram's resolution: 64 buckets for each
// doubling is a relative error under 1.1%, far below run-to-run noise.
const histBucketsPerOctave = 64

// Hist is a log-bucketed latency histogram. It has a fixed size whatever
// the number of samples, and histograms of different workers merge by
// adding. The zero value is empty and ready to use.
type Hist struct {
	counts map[int]uint64
	n      uint64
	max    time.Duration
}

func histBucket(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	return 1 + int(math.Log2(us)*histBucketsPerOctave)
}

// histValue is the middle of bucket b, on a log scale.
func histValue(b int) time.Duration {
	if b == 0 {
		return time.Microsecond / 2
	}
	us := math.Exp2((float64(b-1) + 0.5) / histBucketsPerOctave)
	return time.Duration(us * float64(time.Microsecond))
}

// Record adds one sample.
func (h *Hist) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = make(map[int]uint64)
	}
	h.counts[histBucket(d)]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's samples to h.
func (h *Hist) Merge(o *Hist) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make(map[int]uint64)
	}
	for b, c := range o.counts {
		h.counts[b] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of samples.
func (h *Hist) Count() uint64 { return h.n }

// Max is the largest sample, exactly.
func (h *Hist) Max() time.Duration { return h.max }

// Quantile returns the q-quantile (0 < q ≤ 1), or 0 if h is empty.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	top := histBucket(h.max)
	var seen uint64
	for b := 0; b <= top; b++ {
		seen += h.counts[b]
		if seen >= rank {
			if b == top {
				return h.max
			}
			return histValue(b)
		}
	}
	return h.max
}
