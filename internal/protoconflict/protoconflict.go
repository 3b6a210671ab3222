// Package protoconflict lets one binary link both go-libp2p-pubsub and etcd's client.
//
// Both register a protobuf file named "rpc.proto" (libp2p/go-libp2p-pubsub#729,
// etcd-io/etcd#19682; their message names do not clash), and protobuf-go panics on the
// second registration unless GOLANG_PROTOBUF_REGISTRATION_CONFLICT says otherwise. The
// variable is read when a conflict happens, during package initialisation, so it must be
// set before either package initialises: Go initialises packages in import-path order
// among those whose imports are ready, and this module's path (a.meshkit.dev/…) sorts
// before both github.com/… and go.etcd.io/…, and needs only os. It lives in its own module
// because no path under meshkit.dev sorts early enough. Every MeshKit package that imports
// etcd imports this one. An operator's own setting of the variable is kept.
package protoconflict

import "os"

const env = "GOLANG_PROTOBUF_REGISTRATION_CONFLICT"

// Set is true once the policy is in place; reading it documents the dependency.
var Set = set()

func set() bool {
	if os.Getenv(env) == "" {
		_ = os.Setenv(env, "ignore")
	}
	return true
}
