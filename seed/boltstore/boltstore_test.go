package boltstore_test

import (
	"testing"
	"time"

	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/seed/storetest"
)

func TestStoreContract(t *testing.T) {
	dirs := map[seed.Store]string{}
	open := func(t *testing.T, dir string) seed.Store {
		st, err := boltstore.Open(dir, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		dirs[st] = dir
		return st
	}
	storetest.Run(t, storetest.Suite{
		Open: func(t *testing.T) seed.Store { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, st seed.Store) seed.Store {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dirs[st])
		},
	})
}
