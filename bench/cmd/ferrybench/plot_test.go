package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A run that left phases out (--phases tracing) has nothing to draw in
// some plots: each is still written, none fails (a log scale of no values
// made gonum panic, and the run's results were lost).
func TestPlotsOfARunWithoutPhases(t *testing.T) {
	cfg := &config{out: t.TempDir(), seqCount: 20, seqSize: 1 << 20, concCount: 4, concSize: 1 << 20, latRate: 2000, smallSize: 1024, latRounds: 1}
	r := &results{Order: []string{pFerry, pNginx}, Seq: map[string]seqResult{}, Conc: map[string]concResult{}, LatPooled: nil}
	if err := writePlots(cfg, r); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"mem_sequential.png", "mem_concurrent.png", "cpu_per_gib.png", "latency.png"} {
		if st, err := os.Stat(filepath.Join(cfg.out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: not written (%v)", f, err)
		}
	}
}
