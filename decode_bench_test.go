package bhiv_test

import (
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// BenchmarkDecode decodes (and encodes once) each form of message the
// consumer takes, as it does for every event.
func BenchmarkDecode(b *testing.B) {
	data := `{"team_id":"team_42","action":"analyze_data","status":"ok","output":"the quick brown fox jumps over the lazy dog, twice over","duration_ms":1200,"extra":{"a":[1,2,3],"b":"x"}}`
	envelope := `{"specversion":"1.0","id":"01JD6Q4W3G8Y2N6R5V7X9Z0ABC","source":"executor","type":"bhiv.execution","time":"2026-11-28T10:00:00Z","subject":"team_42","datacontenttype":"application/json","traceparent":"00-abc","data":` + data + `}`
	for _, tc := range []struct {
		name string
		msg  bhiv.Message
	}{
		{"envelope", bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(envelope)}},
		{"bare", bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(data), Header: map[string][]string{"Nats-Msg-Id": {"run-1"}}}},
		{"binary", bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(data), Header: map[string][]string{
			"ce-specversion": {"1.0"}, "ce-id": {"run-2"}, "ce-type": {"bhiv.execution"}, "ce-source": {"executor"}}}},
	} {
		tc.msg.Stream, tc.msg.Sequence, tc.msg.Timestamp = "BHIV", 7, time.Now()
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.msg.Data)))
			for b.Loop() {
				ev, err := bhiv.Decode(tc.msg, bhiv.DecodeOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ev.JSON(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
