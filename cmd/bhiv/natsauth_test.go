package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/hackaverse/bhiv/internal/natstest"
)

// connectWith reads the NATS settings from env, as the binary does, and
// connects with a 5 s deadline. A refusal must come from the server, not
// from the deadline.
func connectWith(t *testing.T, env map[string]string) error {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c := newConfig(fs, envMap(env), natsSettings)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	n := readNATS(c)
	if err := c.err(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := connect(ctx, n, "auth-test", slog.New(slog.DiscardHandler))
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect hung until its deadline: %v", err)
	}
	if err != nil {
		return err
	}
	defer nc.Close()
	return nc.Flush()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// authCase is a credential that must not connect: the error must contain
// want (case-insensitive) and must not contain secret.
type authCase struct {
	name   string
	env    map[string]string
	want   string
	secret string
}

// TestNATSAuth checks each NATS auth method against an embedded server that
// requires it, through the environment variables the binary reads: the
// right credential connects (and the connection works); a wrong or missing
// one is a clear error at once, naming the problem, never the secret.
func TestNATSAuth(t *testing.T) {
	noJS := func(o *server.Options) { o.JetStream = false }
	missing := filepath.Join(t.TempDir(), "missing")

	for _, tc := range []struct {
		method string
		// setup starts the server and returns the settings that connect and
		// the ones that must not (NATS_URL is filled in).
		setup func(t *testing.T) (s *natstest.Server, good map[string]string, bad []authCase)
	}{
		{"user/password", func(t *testing.T) (*natstest.Server, map[string]string, []authCase) {
			s := natstest.Start(t, noJS, func(o *server.Options) { o.Username, o.Password = "bhiv", "right-pass" })
			return s, map[string]string{"NATS_USER": "bhiv", "NATS_PASSWORD": "right-pass"}, []authCase{
				{"wrong password", map[string]string{"NATS_USER": "bhiv", "NATS_PASSWORD": "wrong-pass"}, "authorization violation", "wrong-pass"},
				{"wrong user", map[string]string{"NATS_USER": "eve", "NATS_PASSWORD": "right-pass"}, "authorization violation", "right-pass"},
				{"no credential", map[string]string{}, "authorization violation", ""},
			}
		}},
		{"token", func(t *testing.T) (*natstest.Server, map[string]string, []authCase) {
			s := natstest.Start(t, noJS, func(o *server.Options) { o.Authorization = "right-token" })
			return s, map[string]string{"NATS_TOKEN": "right-token"}, []authCase{
				{"wrong token", map[string]string{"NATS_TOKEN": "wrong-token"}, "authorization violation", "wrong-token"},
				{"no token", map[string]string{}, "authorization violation", ""},
			}
		}},
		{"nkey", func(t *testing.T) (*natstest.Server, map[string]string, []authCase) {
			user, _ := nkeys.CreateUser()
			pub, _ := user.PublicKey()
			seed, _ := user.Seed()
			s := natstest.Start(t, noJS, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
			other, _ := nkeys.CreateUser()
			otherSeed, _ := other.Seed()
			return s, map[string]string{"NATS_NKEY_SEED": writeFile(t, "user.nk", seed)}, []authCase{
				{"unknown key", map[string]string{"NATS_NKEY_SEED": writeFile(t, "other.nk", otherSeed)}, "authorization violation", string(otherSeed)},
				{"seed file missing", map[string]string{"NATS_NKEY_SEED": missing}, "NATS_NKEY_SEED", ""},
				{"not a seed", map[string]string{"NATS_NKEY_SEED": writeFile(t, "junk.nk", []byte("not a seed"))}, "NATS_NKEY_SEED", ""},
			}
		}},
		{"creds", func(t *testing.T) (*natstest.Server, map[string]string, []authCase) {
			op, _ := nkeys.CreateOperator()
			opPub, _ := op.PublicKey()
			opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
			if err != nil {
				t.Fatal(err)
			}
			opClaims, err := jwt.DecodeOperatorClaims(opJWT)
			if err != nil {
				t.Fatal(err)
			}
			acc, _ := nkeys.CreateAccount()
			accPub, _ := acc.PublicKey()
			accJWT, err := jwt.NewAccountClaims(accPub).Encode(op)
			if err != nil {
				t.Fatal(err)
			}
			resolver := &server.MemAccResolver{}
			if err := resolver.Store(accPub, accJWT); err != nil {
				t.Fatal(err)
			}
			s := natstest.Start(t, noJS, func(o *server.Options) {
				o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
				o.AccountResolver = resolver
			})
			// creds returns a creds file for a new user of account accPub,
			// signed by signer.
			creds := func(signer nkeys.KeyPair, expires time.Time) string {
				u, _ := nkeys.CreateUser()
				uPub, _ := u.PublicKey()
				uSeed, _ := u.Seed()
				uc := jwt.NewUserClaims(uPub)
				uc.IssuerAccount = accPub
				if !expires.IsZero() {
					uc.Expires = expires.Unix()
				}
				uJWT, err := uc.Encode(signer)
				if err != nil {
					t.Fatal(err)
				}
				b, err := jwt.FormatUserConfig(uJWT, uSeed)
				if err != nil {
					t.Fatal(err)
				}
				return writeFile(t, "user.creds", b)
			}
			rogue, _ := nkeys.CreateAccount()
			return s, map[string]string{"NATS_CREDS": creds(acc, time.Time{})}, []authCase{
				// A user signed by an account key the operator did not sign.
				{"untrusted signer", map[string]string{"NATS_CREDS": creds(rogue, time.Time{})}, "authorization violation", ""},
				{"expired", map[string]string{"NATS_CREDS": creds(acc, time.Now().Add(-time.Minute))}, "authorization violation", ""},
				{"creds file missing", map[string]string{"NATS_CREDS": missing}, "no such file", ""},
			}
		}},
		{"mtls", func(t *testing.T) (*natstest.Server, map[string]string, []authCase) {
			pki, other := newPKI(t), newPKI(t)
			s := natstest.Start(t, noJS, func(o *server.Options) {
				o.TLS, o.TLSVerify = true, true
				o.TLSConfig = pki.serverTLS(t)
				o.TLSTimeout = 2
			})
			return s, map[string]string{"NATS_CA": pki.caFile, "NATS_CERT": pki.clientCert, "NATS_KEY": pki.clientKey}, []authCase{
				{"no client certificate", map[string]string{"NATS_CA": pki.caFile}, "certificate", ""},
				{"client certificate of another CA", map[string]string{"NATS_CA": pki.caFile, "NATS_CERT": other.clientCert, "NATS_KEY": other.clientKey}, "certificate", ""},
				{"server certificate of an unknown CA", map[string]string{"NATS_CA": other.caFile, "NATS_CERT": pki.clientCert, "NATS_KEY": pki.clientKey}, "certificate", ""},
				{"CA file missing", map[string]string{"NATS_CA": missing, "NATS_CERT": pki.clientCert, "NATS_KEY": pki.clientKey}, "no such file", ""},
				{"no TLS settings", map[string]string{}, "tls", ""},
			}
		}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			s, good, bad := tc.setup(t)
			good["NATS_URL"] = s.URL()
			if err := connectWith(t, good); err != nil {
				t.Fatalf("the right credential does not connect: %v", err)
			}
			for _, bc := range bad {
				t.Run(bc.name, func(t *testing.T) {
					bc.env["NATS_URL"] = s.URL()
					err := connectWith(t, bc.env)
					if err == nil {
						t.Fatal("connected")
					}
					t.Log(err)
					msg := err.Error()
					if !strings.HasPrefix(msg, "connect to NATS at "+s.URL()) && !strings.HasPrefix(msg, "NATS_") {
						t.Errorf("the error does not say what failed: %v", err)
					}
					if !strings.Contains(strings.ToLower(msg), strings.ToLower(bc.want)) {
						t.Errorf("error %q does not mention %q", msg, bc.want)
					}
					if bc.secret != "" && strings.Contains(msg, bc.secret) {
						t.Errorf("the error shows the credential: %v", err)
					}
				})
			}
		})
	}
}

// TestNATSAuthSettings checks that contradictory or incomplete auth
// settings are refused before anything connects, naming the variables.
func TestNATSAuthSettings(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NATS_USER": "bhiv"}, "NATS_USER and NATS_PASSWORD go together"},
		{map[string]string{"NATS_PASSWORD": "s3cret-pw"}, "NATS_USER and NATS_PASSWORD go together"},
		{map[string]string{"NATS_CERT": "c.pem"}, "NATS_CERT and NATS_KEY go together"},
		{map[string]string{"NATS_KEY": "k.pem"}, "NATS_CERT and NATS_KEY go together"},
		{map[string]string{"NATS_TOKEN": "tok", "NATS_CREDS": "u.creds"}, "set only one of"},
		{map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "s3cret-pw", "NATS_NKEY_SEED": "u.nk"}, "set only one of"},
		{map[string]string{"NATS_URL": ""}, ""},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		if _, ok := tc.env["NATS_URL"]; ok {
			// Empty reads as unset: the default URL applies, and is valid.
			c := newConfig(fs, envMap(tc.env), natsSettings)
			readNATS(c)
			if err := c.err(); err != nil {
				t.Errorf("%v: %v", tc.env, err)
			}
			continue
		}
		c := newConfig(fs, envMap(tc.env), natsSettings)
		readNATS(c)
		err := c.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.env, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("%v: the error shows the password: %v", tc.env, err)
		}
	}
}

// pki is a test CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type pki struct {
	ca                                                   *x509.Certificate
	caKey                                                *ecdsa.PrivateKey
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bhiv test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{ca: ca, caKey: caKey, caFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = p.issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = p.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// serverTLS returns a TLS config that serves the server certificate and
// requires a client certificate signed by the CA.
func (p *pki) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
