package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's own; the replica registers its counters of bundles accepted
// and refused, last-known-good writes and false sync heads under the same prefix.
type metrics struct {
	watchClients  prometheus.Gauge
	watchRefused  prometheus.Counter
	watchDelivery prometheus.Histogram
	unsupported   prometheus.Counter
	nacks         prometheus.Counter
	admissions    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, a *Agent) (*metrics, error) {
	m := &metrics{
		watchClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshkit_agent_watch_clients", Help: "Open data-plane watch streams (OmniRelay and MeshKit).",
		}),
		watchRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshkit_agent_watch_refused_total", Help: "Watch streams refused because the agent was at its stream limit.",
		}),
		watchDelivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshkit_agent_watch_delivery_seconds", Help: "Time from a bundle's acceptance to its delivery on a watch stream (the lag of slow clients shows here).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		unsupported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshkit_agent_watch_unsupported_total", Help: "Watches and snapshots refused with control.unsupported_capability.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshkit_agent_watch_nacks_total", Help: "Bundles data-plane clients NACKed.",
		}),
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshkit_agent_extension_admissions_total", Help: "Wasm extension admissions, by verdict (admitted, rejected).",
		}, []string{"verdict"}),
	}
	gauge := func(name, help string, f func(s Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(a.Status()) })
	}
	counter := func(name, help string, f func(s Status) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(a.Status()) })
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		m.watchClients, m.watchRefused, m.watchDelivery, m.unsupported, m.nacks, m.admissions,
		gauge("meshkit_agent_bundle_epoch", "Epoch of the bundle served.", func(s Status) float64 { return float64(s.Serving.Epoch) }),
		gauge("meshkit_agent_bundle_version", "Version of the bundle served.", func(s Status) float64 { return float64(s.Serving.Version) }),
		gauge("meshkit_agent_bundle_age_seconds", "Seconds since the last bundle was accepted.", func(s Status) float64 { return s.AgeSeconds }),
		gauge("meshkit_agent_stale", "1 when the agent serves a stale (expired or old) bundle or none.", func(s Status) float64 { return b2f(s.Stale) }),
		gauge("meshkit_agent_peers", "Connected peers.", func(s Status) float64 { return float64(s.Peers) }),
		gauge("meshkit_agent_certificate_expiry_seconds", "Seconds until the agent's own certificate expires (negative once expired; -1 without one). Alert well before 0: renewal happens at half its life.",
			func(s Status) float64 {
				if s.Identity == nil || s.Identity.Expires.IsZero() {
					return -1
				}
				return s.Identity.Expires.Sub(a.clock.Now()).Seconds()
			}),
		counter("meshkit_agent_peer_certificates_refused_total", "Peer certificates refused: expired, revoked, of another CA or naming another peer (the peer stays out of the mesh).",
			func(s Status) float64 { return float64(s.CertificatesRefused) }),
		counter("meshkit_agent_bytes_received_total", "Bytes received over gossip and sync (message layer).", func(s Status) float64 { return float64(s.BytesIn) }),
		counter("meshkit_agent_bytes_sent_total", "Bytes sent over gossip and sync (message layer).", func(s Status) float64 { return float64(s.BytesOut) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
