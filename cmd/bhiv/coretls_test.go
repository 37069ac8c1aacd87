package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestConsumeCoreMTLS runs `bhiv consume` against a Core that requires a
// client certificate and a bearer token: the event arrives over mTLS.
func TestConsumeCoreMTLS(t *testing.T) {
	pki := newPKI(t)
	stub, err := corestub.New(corestub.Config{Token: "mtls-token"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: stub, TLSConfig: pki.serverTLS(t)}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	ns := natstest.Start(t)
	dir := t.TempDir()
	env := map[string]string{
		"NATS_URL":            ns.URL(),
		"BHIV_CORE_URL":       "https://" + ln.Addr().String() + corestub.Path,
		"BHIV_CORE_TOKEN":     "mtls-token",
		"BHIV_CORE_CA_FILE":   pki.caFile,
		"BHIV_CORE_CERT_FILE": pki.clientCert,
		"BHIV_CORE_KEY_FILE":  pki.clientKey,
		"BHIV_BUCKET_DIR":     filepath.Join(dir, "bucket"),
		"BHIV_FAILED_LOG":     filepath.Join(dir, "failed.log"),
		"BHIV_ADMIN_ADDR":     "off",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), io.Discard, io.Discard) }()
	if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", "mtls-1"); err != nil {
		t.Fatalf("publish: %v %s", err, errOut)
	}
	waitFor(t, 20*time.Second, func() bool { return stub.Seen()["mtls-1"] == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("consume: %v", err)
	}
	if st := stub.Stats(); st.Unauthorized != 0 {
		t.Errorf("unauthorized requests: %d", st.Unauthorized)
	}
}
