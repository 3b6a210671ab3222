// Package examples embeds the example resources so that `meshkit demo` runs anywhere.
package examples

import "embed"

// Shop holds shop/*.yaml: a few services with clusters, routes, retry and authz policies.
//
//go:embed shop/*.yaml
var Shop embed.FS
