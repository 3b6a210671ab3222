package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"meshkit.dev/meshkit/trust"
)

func (a *app) keyGen(fs *pflag.FlagSet) func(args []string) error {
	out := fs.String("out", "", "private key file to write (mode 0600); the public key goes to FILE.pub")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("out", *out); err != nil {
			return err
		}
		k, err := trust.GenerateKey(nil)
		if err != nil {
			return err
		}
		if err := trust.WriteKeyFiles(*out, k); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", k.KeyID())
		fmt.Fprintf(a.stderr, "wrote %s (0600) and %s.pub\n", *out, *out)
		return nil
	}
}

// loadKeys loads key files; private ones are returned as signers too.
func loadKeys(paths []string) (pubs []trust.PublicKey, signers []trust.Signer, err error) {
	for _, p := range paths {
		kf, err := trust.LoadKeyFile(p)
		if err != nil {
			return nil, nil, err
		}
		pubs = append(pubs, kf.Public)
		if kf.Private != nil {
			signers = append(signers, kf.Private)
		}
	}
	return pubs, signers, nil
}

// loadSigners loads private key files and refuses public ones.
func loadSigners(paths []string) ([]trust.Signer, error) {
	var out []trust.Signer
	for _, p := range paths {
		kf, err := trust.LoadKeyFile(p)
		if err != nil {
			return nil, err
		}
		if kf.Private == nil {
			return nil, fmt.Errorf("%s is a public key; signing needs the private key file", p)
		}
		out = append(out, kf.Private)
	}
	return out, nil
}
