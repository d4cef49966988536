package status

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

const ns = "txstream"

// jobStates are the states txstream_job_state reports, one series each.
var jobStates = []job.State{job.Created, job.Running, job.Restarting, job.Failed, job.Finished, job.Canceled}

type metrics struct {
	reg   *prometheus.Registry
	kafka *kprom.Metrics

	commitLatency    prometheus.Histogram
	epochRecords     prometheus.Histogram
	snapPause        prometheus.Histogram
	snapDuration     prometheus.Histogram
	snapWritten      prometheus.Histogram
	snapshotsTotal   *prometheus.CounterVec
	snapSizeMu       sync.Mutex
	snapSize         map[int32]int64 // partition -> total bytes of its newest snapshot
	snapSizeDesc     *prometheus.Desc
	stateDesc        *prometheus.Desc
	lagDesc          *prometheus.Desc
	lagTotalDesc     *prometheus.Desc
	committedDesc    *prometheus.Desc
	hwmDesc          *prometheus.Desc
	stateBytesDesc   *prometheus.Desc
	replayedDesc     *prometheus.Desc
	replayTargetDesc *prometheus.Desc
	recoveringDesc   *prometheus.Desc
	ownedDesc        *prometheus.Desc
	s                *Server
}

// lenientRegistry is the registry kprom registers each client's metrics
// in. A clash (a client created before the previous one was closed) must
// not panic inside the Kafka client: the newer collector replaces the older.
type lenientRegistry struct{ *prometheus.Registry }

func (r lenientRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		err := r.Registry.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			r.Registry.Unregister(are.ExistingCollector)
			err = r.Registry.Register(c)
		}
		_ = err // a metric we cannot export is not worth failing the job for
	}
}

func newMetrics(s *Server) (*metrics, error) {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg, s: s, snapSize: map[int32]int64{}}
	m.kafka = kprom.NewMetrics(ns, kprom.Subsystem("kafka"), kprom.Registry(lenientRegistry{reg}))

	st := s.b.Stats()
	counter := func(name, help string, f func(Counters) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help},
			func() float64 { return float64(f(st.Counters())) })
	}
	m.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "epoch_commit_duration_seconds",
		Help:    "Time to commit an epoch: sink commit (Kafka transaction with output, dead letters and offsets) and state apply.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	m.epochRecords = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "epoch_records",
		Help: "Records per committed epoch.", Buckets: prometheus.ExponentialBuckets(1, 4, 10)})
	m.snapPause = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "snapshot_pause_seconds",
		Help:    "Time processing paused for a snapshot (the store's local checkpoint), completed snapshots.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15)})
	m.snapDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "snapshot_duration_seconds",
		Help:    "Time from a snapshot's trigger to its publication in the checkpoint directory, completed snapshots.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 15)})
	m.snapWritten = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "snapshot_written_bytes",
		Help:    "Bytes copied into the checkpoint directory per completed snapshot (incremental snapshots copy only new files).",
		Buckets: prometheus.ExponentialBuckets(1024, 4, 12)})
	m.snapshotsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "snapshots_total",
		Help: "Snapshot results since the process started, by status (completed, failed)."}, []string{"status"})
	m.snapshotsTotal.WithLabelValues("completed")
	m.snapshotsTotal.WithLabelValues("failed")

	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
	}
	m.stateDesc = desc("job_state", "Job state: 1 for the current state, 0 for the others.", "state")
	m.lagDesc = desc("partition_lag_records", "Records between the committed offset and the high watermark, per owned partition (as of the last commit).", "partition")
	m.lagTotalDesc = desc("lag_records", "Summed lag of the owned partitions.")
	m.committedDesc = desc("partition_committed_offset", "Next offset to process (committed), per owned partition.", "partition")
	m.hwmDesc = desc("partition_high_watermark", "High watermark seen in the last fetch, per owned partition.", "partition")
	m.stateBytesDesc = desc("partition_state_bytes", "Size of the partition's live state store.", "partition")
	m.replayedDesc = desc("recovery_replayed_records", "Records replayed so far, per partition being recovered.", "partition")
	m.replayTargetDesc = desc("recovery_replay_target_records", "Records to replay in total (0 while unknown), per partition being recovered.", "partition")
	m.recoveringDesc = desc("partitions_recovering", "Partitions being recovered.")
	m.ownedDesc = desc("partitions_owned", "Partitions this instance owns (recovered).")
	m.snapSizeDesc = desc("snapshot_size_bytes", "Total size of the newest completed snapshot, per partition.", "partition")

	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		counter("records_in_total", "Input records processed in committed epochs (each record once, however often it was redone).", func(c Counters) int64 { return c.RecordsIn }),
		counter("records_out_total", "Output records committed.", func(c Counters) int64 { return c.RecordsOut }),
		counter("records_dlq_total", "Records committed to the dead-letter topic (invalid input, conflicting duplicates).", func(c Counters) int64 { return c.DeadLetters }),
		counter("records_duplicate_total", "Exact duplicate records dropped (same transaction id and content within the dedup window).", func(c Counters) int64 { return c.Duplicates }),
		counter("epochs_total", "Epochs committed.", func(c Counters) int64 { return c.Epochs }),
		counter("epochs_aborted_total", "Epochs aborted by a rebalance (their records are processed again).", func(c Counters) int64 { return c.EpochsAborted }),
		counter("snapshot_failures_total", "Snapshots that failed (disk full, I/O error); retried at the next interval.", func(c Counters) int64 { return c.SnapshotFailures }),
		counter("recoveries_total", "Partition recoveries (restore + replay), including the first start.", func(c Counters) int64 { return c.Recoveries }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "restarts_total",
			Help: "Restarts of the job by its restart strategy."}, func() float64 { return float64(s.b.Job().Restarts) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "job_attempt",
			Help: "Current (or last) attempt of the job, from 1."}, func() float64 { return float64(s.b.Job().Attempt) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "job_state_since_timestamp_seconds",
			Help: "Unix time of the job's last state change."}, func() float64 { return float64(s.b.Job().Since.UnixMilli()) / 1000 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "input_partitions",
			Help: "Partitions of the input topic (0: unknown)."}, func() float64 { return float64(s.b.InputPartitions()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "build_info", Help: "Build version (always 1).",
			ConstLabels: prometheus.Labels{"version": s.cfg.Version}}, func() float64 { return 1 }),
		m.commitLatency, m.epochRecords, m.snapPause, m.snapDuration, m.snapWritten, m.snapshotsTotal,
		m,
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	st.OnCommit(m.onCommit)
	st.OnSnapshot(m.onSnapshot)
	return m, nil
}

func (m *metrics) onCommit(lat time.Duration, records int) {
	m.commitLatency.Observe(lat.Seconds())
	m.epochRecords.Observe(float64(records))
}

func (m *metrics) onSnapshot(si pipeline.SnapshotInfo) {
	if si.Status == "failed" {
		m.snapshotsTotal.WithLabelValues("failed").Inc()
		return
	}
	m.snapshotsTotal.WithLabelValues("completed").Inc()
	m.snapPause.Observe(si.Pause.Seconds())
	m.snapDuration.Observe(si.Duration.Seconds())
	m.snapWritten.Observe(float64(si.BytesWritten))
	m.snapSizeMu.Lock()
	m.snapSize[si.Partition] = si.TotalBytes
	m.snapSizeMu.Unlock()
}

// Describe implements prometheus.Collector for the dynamic series.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.stateDesc, m.lagDesc, m.lagTotalDesc, m.committedDesc, m.hwmDesc,
		m.stateBytesDesc, m.replayedDesc, m.replayTargetDesc, m.recoveringDesc, m.ownedDesc, m.snapSizeDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: job state, per-partition
// offsets and lag, replay progress, snapshot sizes.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	cur := m.s.b.Job().State
	for _, st := range jobStates {
		v := 0.0
		if st == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, v, string(st))
	}
	stats := m.s.b.Stats()
	var lag int64
	parts := stats.Partitions()
	for _, p := range parts {
		l := strconv.Itoa(int(p.Partition))
		lag += p.Lag
		ch <- prometheus.MustNewConstMetric(m.lagDesc, prometheus.GaugeValue, float64(p.Lag), l)
		ch <- prometheus.MustNewConstMetric(m.committedDesc, prometheus.GaugeValue, float64(p.Committed), l)
		ch <- prometheus.MustNewConstMetric(m.hwmDesc, prometheus.GaugeValue, float64(p.HighWatermark), l)
		ch <- prometheus.MustNewConstMetric(m.stateBytesDesc, prometheus.GaugeValue, float64(p.StateBytes), l)
	}
	ch <- prometheus.MustNewConstMetric(m.lagTotalDesc, prometheus.GaugeValue, float64(lag))
	ch <- prometheus.MustNewConstMetric(m.ownedDesc, prometheus.GaugeValue, float64(len(parts)))
	rec := stats.Recovering()
	for p, v := range rec {
		l := strconv.Itoa(int(p))
		ch <- prometheus.MustNewConstMetric(m.replayedDesc, prometheus.GaugeValue, float64(v[0]), l)
		ch <- prometheus.MustNewConstMetric(m.replayTargetDesc, prometheus.GaugeValue, float64(v[1]), l)
	}
	ch <- prometheus.MustNewConstMetric(m.recoveringDesc, prometheus.GaugeValue, float64(len(rec)))
	m.snapSizeMu.Lock()
	for p, b := range m.snapSize {
		ch <- prometheus.MustNewConstMetric(m.snapSizeDesc, prometheus.GaugeValue, float64(b), strconv.Itoa(int(p)))
	}
	m.snapSizeMu.Unlock()
}
