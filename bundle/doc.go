// Package bundle turns declarative resources into MeshKit bundles and back: it decodes
// the YAML resources operators write (apiVersion, kind, metadata, spec), validates them,
// builds the canonical Bundle, encodes it deterministically (two seeds that compile the
// same state produce the same bytes and the same content hash), and computes, applies
// and explains deltas between bundles.
//
// Signing and verification live in package trust; bundle only deals with content.
package bundle
