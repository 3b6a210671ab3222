package seed

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	publishLatency     prometheus.Histogram
	bundleBytes        *prometheus.GaugeVec
	validationFailures prometheus.Counter
	publishes          prometheus.Counter
	publishErrors      prometheus.Counter
	version            prometheus.Gauge
	resources          prometheus.Gauge
	writes             *prometheus.CounterVec
	identity           *prometheus.CounterVec
	controlVersion     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		publishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshkit_seed_publish_latency_seconds", Help: "Time from the first unpublished change to its publication.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		bundleBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshkit_seed_bundle_bytes", Help: "Size of the newest signed bundle envelope, by capability variant.",
		}, []string{"variant"}),
		validationFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshkit_seed_validation_failures_total", Help: "Writes refused by validation.",
		}),
		publishes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "meshkit_seed_publishes_total", Help: "Versions published."}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshkit_seed_publish_errors_total", Help: "Publish attempts that failed."}),
		version:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshkit_seed_version", Help: "Newest published version."}),
		resources:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshkit_seed_resources", Help: "Resources in the desired state."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshkit_seed_writes_total", Help: "Admin writes by operation and result.",
		}, []string{"op", "result"}),
	}
	m.identity = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshkit_seed_identity_total", Help: "Identity calls by kind (enrol, csr) and result (ok, issued, refused, unknown_token, ...).",
	}, []string{"call", "result"})
	m.controlVersion = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshkit_seed_control_version", Help: "Version of the newest control message (root rotations, trust bundle, revocations) the seed signed.",
	})
	for _, c := range []prometheus.Collector{m.publishLatency, m.bundleBytes, m.validationFailures, m.publishes, m.publishErrors, m.version, m.resources, m.writes, m.identity, m.controlVersion} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
