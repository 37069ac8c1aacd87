package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestConflictingDuplicateID publishes two different events under one id
// (without Nats-Msg-Id, so JetStream stores both), in one consumer process
// or with a restart in between. Core keeps the first (it dedupes on
// Idempotency-Key), so the second must not silently vanish nor silently
// replace the first in the bucket: the bucket must agree with Core, and the
// conflicting message must be in the failure log (the bucket keeps the
// first event written under an id and reports the second as a permanent
// conflict).
func TestConflictingDuplicateID(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			s := newStack(t, 1)
			nc, _ := s.js()
			event := func(action string) string {
				return `{"specversion":"1.0","id":"conflict-1","source":"e2e","type":"bhiv.execution","time":"2026-11-28T10:00:00Z","data":{"team_id":"t","action":"` + action + `"}}`
			}
			pub := func(action string) {
				t.Helper()
				msg := nats.NewMsg("bhiv.events.execution")
				msg.Data = []byte(event(action))
				if err := nc.PublishMsg(msg); err != nil {
					t.Fatal(err)
				}
				nc.Flush()
			}
			c := s.consumer()
			pub("first")
			s.drained(20 * time.Second)
			if restart {
				c.kill(syscall.SIGTERM)
				s.consumer()
			}
			pub("second")
			s.drained(20 * time.Second)
			s.account(fmt.Sprintf("conflicting-duplicate-id-restart=%v", restart), 2)

			b, err := os.ReadFile(filepath.Join(s.dir, "bucket", "execution", "2026-11-28", "conflict-1.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"action":"first"`) {
				t.Errorf("the bucket holds %s, Core kept the first event (Idempotency-Key): the sinks disagree", b)
			}
			var recorded bool
			for sink, ids := range readFailed(t, filepath.Join(s.dir, "failed.log")) {
				if ids["conflict-1"] {
					t.Logf("failure record of sink %s for the conflicting event", sink)
					recorded = true
				}
			}
			if !recorded {
				t.Error("the second, different event under id conflict-1 is in no failure record: dropped without a trace")
			}
		})
	}
}
