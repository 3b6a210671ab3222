package etcdstore_test

import (
	"testing"

	"meshkit.dev/meshkit/internal/etcdtest"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/etcdstore"
	"meshkit.dev/meshkit/seed/storetest"
)

func TestStoreContract(t *testing.T) {
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{})
	n := 0
	domains := map[seed.Store]string{}
	open := func(t *testing.T, domain string) seed.Store {
		st, err := etcdstore.New(srv.Client(t), domain)
		if err != nil {
			t.Fatal(err)
		}
		domains[st] = domain
		return st
	}
	storetest.Run(t, storetest.Suite{
		Open: func(t *testing.T) seed.Store {
			n++ // each subtest its own domain: its own prefix on the one server
			return open(t, "d"+string(rune('a'+n)))
		},
		Reopen: func(t *testing.T, st seed.Store) seed.Store { return open(t, domains[st]) },
	})
}
