package status

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

func gather(t *testing.T, s *Server) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func hasFamily(t *testing.T, s *Server, name string) bool {
	_, ok := gather(t, s)[name]
	return ok
}

// value returns the value of the series of name whose labels include the
// given pairs (counter, gauge, or histogram sample count).
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v has no such series", name, labels)
	return 0
}

func histSum(t *testing.T, mfs map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	return mfs[name].GetMetric()[0].GetHistogram().GetSampleSum()
}

func TestMetricsAfterKnownSequence(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	st := b.stats
	st.set(func(f *fakeStats) {
		f.counters = Counters{RecordsIn: 1000, RecordsOut: 960, DeadLetters: 25, Duplicates: 15, Epochs: 2, EpochsAborted: 1, Recoveries: 3}
		f.partitions = []pipeline.PartitionInfo{
			{Partition: 0, Committed: 500, HighWatermark: 530, Lag: 30, StateBytes: 2048},
			{Partition: 2, Committed: 480, HighWatermark: 492, Lag: 12, StateBytes: 1024},
		}
		f.recovering[1] = [2]int64{300, 1200}
	})
	st.commit(20*time.Millisecond, 600)
	st.commit(60*time.Millisecond, 400)
	st.snapshot(pipeline.SnapshotInfo{ID: "a", Partition: 0, Pause: 2 * time.Millisecond, Duration: 40 * time.Millisecond,
		BytesWritten: 4096, TotalBytes: 8192, Status: "completed"})
	st.snapshot(pipeline.SnapshotInfo{ID: "b", Partition: 2, Pause: 4 * time.Millisecond, Duration: 80 * time.Millisecond,
		BytesWritten: 1024, TotalBytes: 3000, Status: "completed"})
	st.snapshot(pipeline.SnapshotInfo{Partition: 2, Status: "failed", Error: "disk full"})
	b.setJob(func(s *job.Status) { s.State, s.Restarts, s.Attempt = job.Restarting, 2, 3 })

	mfs := gather(t, s)
	exact := map[string]float64{
		"txstream_records_in_total":        1000,
		"txstream_records_out_total":       960,
		"txstream_records_dlq_total":       25,
		"txstream_records_duplicate_total": 15,
		"txstream_epochs_total":            2,
		"txstream_epochs_aborted_total":    1,
		"txstream_recoveries_total":        3,
		"txstream_snapshot_failures_total": 1,
		"txstream_restarts_total":          2,
		"txstream_job_attempt":             3,
		"txstream_input_partitions":        4,
		"txstream_lag_records":             42,
		"txstream_partitions_owned":        2,
		"txstream_partitions_recovering":   1,
		// histogram sample counts
		"txstream_epoch_commit_duration_seconds": 2,
		"txstream_epoch_records":                 2,
		"txstream_snapshot_pause_seconds":        2,
		"txstream_snapshot_duration_seconds":     2,
		"txstream_snapshot_written_bytes":        2,
	}
	for name, want := range exact {
		if got := value(t, mfs, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	sums := map[string]float64{
		"txstream_epoch_commit_duration_seconds": 0.08,
		"txstream_epoch_records":                 1000,
		"txstream_snapshot_pause_seconds":        0.006,
		"txstream_snapshot_duration_seconds":     0.12,
		"txstream_snapshot_written_bytes":        5120,
	}
	for name, want := range sums {
		if got := histSum(t, mfs, name); got < want-1e-9 || got > want+1e-9 {
			t.Errorf("%s sum = %v, want %v", name, got, want)
		}
	}
	labelled := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"txstream_job_state", []string{"state", "RESTARTING"}, 1},
		{"txstream_job_state", []string{"state", "RUNNING"}, 0},
		{"txstream_job_state", []string{"state", "FAILED"}, 0},
		{"txstream_snapshots_total", []string{"status", "completed"}, 2},
		{"txstream_snapshots_total", []string{"status", "failed"}, 1},
		{"txstream_partition_lag_records", []string{"partition", "0"}, 30},
		{"txstream_partition_lag_records", []string{"partition", "2"}, 12},
		{"txstream_partition_committed_offset", []string{"partition", "2"}, 480},
		{"txstream_partition_high_watermark", []string{"partition", "0"}, 530},
		{"txstream_partition_state_bytes", []string{"partition", "0"}, 2048},
		{"txstream_recovery_replayed_records", []string{"partition", "1"}, 300},
		{"txstream_recovery_replay_target_records", []string{"partition", "1"}, 1200},
		{"txstream_snapshot_size_bytes", []string{"partition", "0"}, 8192},
		{"txstream_snapshot_size_bytes", []string{"partition", "2"}, 3000},
		{"txstream_build_info", []string{"version", "v-test"}, 1},
	}
	for _, c := range labelled {
		if got := value(t, mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(mfs["txstream_job_state"].GetMetric()); n != 6 {
		t.Errorf("txstream_job_state has %d series, want one per state (6)", n)
	}

	// Counter funcs read the atomics at scrape time: exact, no drift.
	st.set(func(f *fakeStats) { f.counters.RecordsIn = 1001 })
	if got := value(t, gather(t, s), "txstream_records_in_total"); got != 1001 {
		t.Errorf("records_in after one more = %v", got)
	}

	// The text exposition over HTTP.
	r := do(t, s, "GET", "/metrics", "", nil)
	if r.code != 200 {
		t.Fatalf("/metrics: %d", r.code)
	}
	text := string(r.body)
	for _, line := range []string{"txstream_records_in_total 1001", `txstream_job_state{state="RESTARTING"} 1`, `txstream_job_state{state="RUNNING"} 0`,
		"# TYPE txstream_epoch_commit_duration_seconds histogram", "go_goroutines", "process_"} {
		if !strings.Contains(text, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

// TestMetricNamesLint runs Prometheus' own naming linter on our metrics.
func TestMetricNamesLint(t *testing.T) {
	s, _ := newTest(t, "127.0.0.1:8081", "")
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ours []*dto.MetricFamily
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "txstream_") && !strings.HasPrefix(mf.GetName(), "txstream_kafka_") { // kprom names its own
			ours = append(ours, mf)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, p := range problems {
		msgs = append(msgs, p.Metric+": "+p.Text)
	}
	sort.Strings(msgs)
	if len(msgs) > 0 {
		t.Errorf("promlint:\n%s", strings.Join(msgs, "\n"))
	}
}
