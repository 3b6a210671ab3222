// Package omnirelay_test pins the OmniRelay wire contract (MISSION.md section 3): every
// message, field name, number, type and cardinality, and both services' methods. A
// change here breaks real OmniRelay clients; buf breaking catches edits relative to the
// previous commit, this test catches a contract that was wrong from the start.
package omnirelay_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
	leadershipv1 "meshkit.dev/meshkit/proto/omnirelay/mesh/control/v1"
)

// contract lists "Message: number name type [repeated]" as the OmniRelay protos define them.
var contract = map[string][]string{
	"omnirelay.control.CapabilitySet":                      {"1 items string repeated", "2 build_epoch string"},
	"omnirelay.control.WatchResumeToken":                   {"1 version string", "2 epoch int64", "3 opaque bytes"},
	"omnirelay.control.ControlWatchRequest":                {"1 node_id string", "2 capabilities omnirelay.control.CapabilitySet", "3 resume_token omnirelay.control.WatchResumeToken"},
	"omnirelay.control.ControlBackoff":                     {"1 millis int64"},
	"omnirelay.control.ControlError":                       {"1 code string", "2 message string", "3 remediation string"},
	"omnirelay.control.ControlWatchResponse":               {"1 version string", "2 epoch int64", "3 payload bytes", "4 full_snapshot bool", "5 resume_token omnirelay.control.WatchResumeToken", "6 backoff omnirelay.control.ControlBackoff", "7 error omnirelay.control.ControlError", "8 required_capabilities string repeated"},
	"omnirelay.control.ControlSnapshotRequest":             {"1 node_id string", "2 capabilities omnirelay.control.CapabilitySet"},
	"omnirelay.control.ControlSnapshotResponse":            {"1 version string", "2 epoch int64", "3 payload bytes", "4 required_capabilities string repeated"},
	"omnirelay.ca.CsrRequest":                              {"1 node_id string", "2 csr bytes"},
	"omnirelay.ca.CertResponse":                            {"1 certificate bytes", "2 certificate_chain bytes", "3 trust_bundle bytes", "4 expires_at string", "5 renew_after string", "6 issued_at string", "7 subject string", "8 san_dns string repeated", "9 san_uri string repeated"},
	"omnirelay.ca.TrustBundleRequest":                      {},
	"omnirelay.ca.TrustBundleResponse":                     {"1 trust_bundle bytes"},
	"omnirelay.mesh.control.v1.LeadershipSubscribeRequest": {"1 scope string"},
	"omnirelay.mesh.control.v1.LeadershipToken": {"1 scope string", "2 scope_kind string", "3 leader_id string", "4 term int64", "5 fence_token int64",
		"6 issued_at google.protobuf.Timestamp", "7 expires_at google.protobuf.Timestamp", "8 labels map<string, string>"},
	"omnirelay.mesh.control.v1.LeadershipEvent": {"1 kind omnirelay.mesh.control.v1.LeadershipEventKind", "2 scope string", "3 leader_id string",
		"4 token omnirelay.mesh.control.v1.LeadershipToken", "5 reason string", "6 correlation_id string", "7 occurred_at google.protobuf.Timestamp"},
}

// enums lists each contract enum's values in number order.
var enums = map[string][]string{
	"omnirelay.mesh.control.v1.LeadershipEventKind": {"LEADERSHIP_EVENT_KIND_UNSPECIFIED", "LEADERSHIP_EVENT_KIND_SNAPSHOT", "LEADERSHIP_EVENT_KIND_OBSERVED",
		"LEADERSHIP_EVENT_KIND_ELECTED", "LEADERSHIP_EVENT_KIND_RENEWED", "LEADERSHIP_EVENT_KIND_LOST", "LEADERSHIP_EVENT_KIND_EXPIRED", "LEADERSHIP_EVENT_KIND_STEPPED_DOWN"},
}

var services = map[string][]string{
	"omnirelay.control.ControlPlaneWatch": {
		"Watch(omnirelay.control.ControlWatchRequest) returns (stream omnirelay.control.ControlWatchResponse)",
		"Snapshot(omnirelay.control.ControlSnapshotRequest) returns (omnirelay.control.ControlSnapshotResponse)",
	},
	"omnirelay.ca.CertificateAuthority": {
		"SubmitCsr(omnirelay.ca.CsrRequest) returns (omnirelay.ca.CertResponse)",
		"TrustBundle(omnirelay.ca.TrustBundleRequest) returns (omnirelay.ca.TrustBundleResponse)",
	},
	"omnirelay.mesh.control.v1.LeadershipControlService": {
		"Subscribe(omnirelay.mesh.control.v1.LeadershipSubscribeRequest) returns (stream omnirelay.mesh.control.v1.LeadershipEvent)",
	},
}

func describeField(fd protoreflect.FieldDescriptor) string {
	typ := fd.Kind().String()
	if fd.Message() != nil {
		typ = string(fd.Message().FullName())
	}
	if fd.Enum() != nil {
		typ = string(fd.Enum().FullName())
	}
	s := fmt.Sprintf("%d %s %s", fd.Number(), fd.Name(), typ)
	if fd.IsList() {
		s += " repeated"
	}
	if fd.IsMap() {
		s = fmt.Sprintf("%d %s map<%s, %s>", fd.Number(), fd.Name(), fd.MapKey().Kind(), fd.MapValue().Kind())
	}
	return s
}

func files() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{controlpb.File_omnirelay_control_control_proto, capb.File_omnirelay_ca_ca_proto,
		leadershipv1.File_omnirelay_mesh_control_v1_leadership_control_proto}
}

func TestEnumsMatchTheContract(t *testing.T) {
	seen := 0
	for _, fd := range files() {
		for i := 0; i < fd.Enums().Len(); i++ {
			ed := fd.Enums().Get(i)
			want, ok := enums[string(ed.FullName())]
			if !ok {
				t.Errorf("enum %s is not in the OmniRelay contract", ed.FullName())
				continue
			}
			seen++
			var got []string
			for j := 0; j < ed.Values().Len(); j++ {
				v := ed.Values().Get(j)
				if int(v.Number()) != j {
					t.Errorf("%s: %s is %d, want %d", ed.FullName(), v.Name(), v.Number(), j)
				}
				got = append(got, string(v.Name()))
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s:\n got  %v\n want %v", ed.FullName(), got, want)
			}
		}
	}
	if seen != len(enums) {
		t.Errorf("%d of %d contract enums found", seen, len(enums))
	}
}

func TestMessagesMatchTheContract(t *testing.T) {
	seen := map[string]bool{}
	for _, fd := range files() {
		for i := 0; i < fd.Messages().Len(); i++ {
			md := fd.Messages().Get(i)
			name := string(md.FullName())
			seen[name] = true
			want, ok := contract[name]
			if !ok {
				t.Errorf("message %s is not in the OmniRelay contract", name)
				continue
			}
			var got []string
			for j := 0; j < md.Fields().Len(); j++ {
				got = append(got, describeField(md.Fields().Get(j)))
			}
			sort.Strings(got)
			w := append([]string(nil), want...)
			sort.Strings(w)
			if strings.Join(got, "; ") != strings.Join(w, "; ") {
				t.Errorf("%s fields:\n got  %v\n want %v", name, got, w)
			}
		}
	}
	for name := range contract {
		if !seen[name] {
			t.Errorf("contract message %s is missing", name)
		}
	}
}

func TestServicesMatchTheContract(t *testing.T) {
	for _, fd := range files() {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			want := services[string(sd.FullName())]
			var got []string
			for j := 0; j < sd.Methods().Len(); j++ {
				m := sd.Methods().Get(j)
				out := string(m.Output().FullName())
				if m.IsStreamingServer() {
					out = "stream " + out
				}
				if m.IsStreamingClient() {
					t.Errorf("%s.%s streams from the client", sd.FullName(), m.Name())
				}
				got = append(got, fmt.Sprintf("%s(%s) returns (%s)", m.Name(), m.Input().FullName(), out))
			}
			if strings.Join(got, "; ") != strings.Join(want, "; ") {
				t.Errorf("%s:\n got  %v\n want %v", sd.FullName(), got, want)
			}
		}
	}
}
