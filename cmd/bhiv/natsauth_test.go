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
// connects with a 5 s deadline.
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
	start := time.Now()
	nc, err := connect(ctx, n, "auth-test", slog.New(slog.DiscardHandler))
	if time.Since(start) > 5*time.Second {
		t.Errorf("connect took %s: it must answer within its deadline", time.Since(start))
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

// TestNATSAuth checks each NATS auth method against a server that requires
// it: the right credential connects; a wrong one is a clear error at once.
func TestNATSAuth(t *testing.T) {
	noJS := func(o *server.Options) { o.JetStream = false }

	t.Run("user/password", func(t *testing.T) {
		s := natstest.Start(t, noJS, func(o *server.Options) { o.Username, o.Password = "bhiv", "right-pass" })
		if err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_USER": "bhiv", "NATS_PASSWORD": "right-pass"}); err != nil {
			t.Fatalf("right password: %v", err)
		}
		err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_USER": "bhiv", "NATS_PASSWORD": "wrong-pass"})
		wantAuthError(t, err, "wrong-pass")
	})

	t.Run("token", func(t *testing.T) {
		s := natstest.Start(t, noJS, func(o *server.Options) { o.Authorization = "right-token" })
		if err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_TOKEN": "right-token"}); err != nil {
			t.Fatalf("right token: %v", err)
		}
		wantAuthError(t, connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_TOKEN": "wrong-token"}), "wrong-token")
	})

	t.Run("nkey", func(t *testing.T) {
		user, _ := nkeys.CreateUser()
		pub, _ := user.PublicKey()
		seed, _ := user.Seed()
		s := natstest.Start(t, noJS, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
		if err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_NKEY_SEED": writeFile(t, "user.nk", seed)}); err != nil {
			t.Fatalf("right seed: %v", err)
		}
		other, _ := nkeys.CreateUser()
		otherSeed, _ := other.Seed()
		wantAuthError(t, connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_NKEY_SEED": writeFile(t, "other.nk", otherSeed)}), string(otherSeed))
	})

	t.Run("creds", func(t *testing.T) {
		op, _ := nkeys.CreateOperator()
		opPub, _ := op.PublicKey()
		opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		opClaims, _ := jwt.DecodeOperatorClaims(opJWT)
		acc, _ := nkeys.CreateAccount()
		accPub, _ := acc.PublicKey()
		accJWT, err := jwt.NewAccountClaims(accPub).Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		resolver := &server.MemAccResolver{}
		resolver.Store(accPub, accJWT)
		s := natstest.Start(t, noJS, func(o *server.Options) {
			o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
			o.AccountResolver = resolver
		})
		creds := func(signer nkeys.KeyPair) string {
			u, _ := nkeys.CreateUser()
			uPub, _ := u.PublicKey()
			uSeed, _ := u.Seed()
			uc := jwt.NewUserClaims(uPub)
			uc.IssuerAccount = accPub
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
		if err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_CREDS": creds(acc)}); err != nil {
			t.Fatalf("right creds: %v", err)
		}
		// A user signed by an account the server does not trust.
		rogue, _ := nkeys.CreateAccount()
		wantAuthError(t, connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_CREDS": creds(rogue)}), "")
	})

	t.Run("tls", func(t *testing.T) {
		pki := newPKI(t)
		s := natstest.Start(t, noJS, func(o *server.Options) {
			o.TLS, o.TLSVerify = true, true
			o.TLSConfig = pki.serverTLS(t)
			o.TLSTimeout = 2
		})
		env := map[string]string{"NATS_URL": s.URL(), "NATS_CA": pki.caFile, "NATS_CERT": pki.clientCert, "NATS_KEY": pki.clientKey}
		if err := connectWith(t, env); err != nil {
			t.Fatalf("mTLS: %v", err)
		}
		// Without the client certificate the server refuses.
		err := connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_CA": pki.caFile})
		if err == nil || !strings.Contains(err.Error(), "connect to NATS") {
			t.Fatalf("no client certificate: err = %v", err)
		}
		// A CA that did not sign the server's certificate.
		other := newPKI(t)
		err = connectWith(t, map[string]string{"NATS_URL": s.URL(), "NATS_CA": other.caFile, "NATS_CERT": pki.clientCert, "NATS_KEY": pki.clientKey})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("unknown CA: err = %v", err)
		}
	})
}

func wantAuthError(t *testing.T, err error, secret string) {
	t.Helper()
	if err == nil {
		t.Fatal("a wrong credential connected")
	}
	if !strings.Contains(err.Error(), "connect to NATS at") || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("unclear error: %v", err)
	}
	if secret != "" && strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the credential: %v", err)
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
