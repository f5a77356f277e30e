package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ResourceReport is what the target process used, read from /proc.
type ResourceReport struct {
	PID        int     `json:"pid"`
	RSSMaxMB   float64 `json:"rss_max_mb"`
	RSSLastMB  float64 `json:"rss_last_mb"`
	ThreadsMax int     `json:"threads_max"`
	FDsMax     int     `json:"open_files_max"`
	Samples    int     `json:"samples"`
	Series     []Point `json:"series,omitempty"`
}

// Point is one sample.
type Point struct {
	RSSMB   float64 `json:"rss_mb"`
	Threads int     `json:"threads"`
	FDs     int     `json:"open_files"`
}

type resourceSampler struct {
	pid int
	mu  sync.Mutex
	r   ResourceReport
}

func newResourceSampler(pid int) *resourceSampler {
	return &resourceSampler{pid: pid, r: ResourceReport{PID: pid}}
}

func (s *resourceSampler) sample() {
	p, err := readProc(s.pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.r.Samples++
	s.r.RSSLastMB = p.RSSMB
	s.r.RSSMaxMB = max(s.r.RSSMaxMB, p.RSSMB)
	s.r.ThreadsMax = max(s.r.ThreadsMax, p.Threads)
	s.r.FDsMax = max(s.r.FDsMax, p.FDs)
	if len(s.r.Series) < 3600 {
		s.r.Series = append(s.r.Series, p)
	}
}

func (s *resourceSampler) report() *ResourceReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.r
	r.Series = append([]Point(nil), s.r.Series...)
	return &r
}

// readProc reads VmRSS and Threads from /proc/PID/status and counts fds.
func readProc(pid int) (Point, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Point{}, err
	}
	defer f.Close()
	var p Point
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			kb, _ := strconv.ParseFloat(fields[0], 64)
			p.RSSMB = kb / 1024
		case "Threads":
			p.Threads, _ = strconv.Atoi(fields[0])
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		p.FDs = len(ents)
	}
	return p, nil
}
