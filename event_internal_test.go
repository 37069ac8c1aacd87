package bhiv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"testing"
)

// refIDPattern is the id rule as the issue states it; ValidID must agree.
var refIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"", "a", "_a", "a_b:c.d-e", "a\n", "é", fmt.Sprintf("%0129d", 1), fmt.Sprintf("%0128d", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidID(id), refIDPattern.MatchString(id); got != want {
			t.Fatalf("ValidID(%q) = %v, regexp says %v", id, got, want)
		}
	})
}

// refCheckData is checkData as first written: decode the object into a map
// and each known field into its type. The one-pass checkData must agree.
func refCheckData(kind Kind, data json.RawMessage) (string, error) {
	if len(data) == 0 {
		return "", &DecodeError{Reason: ErrMissingTeam}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		if firstNonSpace(data) != '{' {
			return "", &DecodeError{Reason: ErrNotObject}
		}
		return "", &DecodeError{Reason: ErrNotJSON}
	}
	if fields == nil {
		return "", &DecodeError{Reason: ErrNotObject}
	}
	var team string
	if raw, ok := fields["team_id"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &team); err != nil {
			return "", &DecodeError{Reason: ErrInvalidData}
		}
	}
	want := dataFields[kind]
	for _, name := range want.numeric {
		if raw, ok := fields[name]; ok && string(raw) != "null" {
			var f float64
			if err := json.Unmarshal(raw, &f); err != nil {
				return "", &DecodeError{Reason: ErrInvalidData}
			}
		}
	}
	for _, name := range want.strs {
		if raw, ok := fields[name]; ok && string(raw) != "null" {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", &DecodeError{Reason: ErrInvalidData}
			}
		}
	}
	return team, nil
}

func FuzzCheckData(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[1]`, `"x"`, `{"team_id":"t"}`, ` { "team_id" : "t\u00e9\"" , "x":[{"a":"}"}] } `,
		`{"team_id":1}`, `{"team_id":null}`, `{"team_id":"a","team_id":"b"}`, `{"team\u005fid":"esc"}`,
		`{"duration_ms":"1"}`, `{"duration_ms":1e400}`, `{"duration_ms":-0.5e-3,"status":"ok"}`, `{"reward":true}`,
		`{"reason":{"a":1},"team_id":"t"}`, `{"action":["x"]}`, `{"team_id":"t\xff"}`, `{"a":"\\","team_id":"q"}`,
		`{"team_id":"t"`, `{"team_id":"t"}x`, "{\"a\":[1,{\"b\":\"]}\"}],\"error\":5}",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, data string, execution bool) {
		kind := KindReward
		if execution {
			kind = KindExecution
		}
		team, err := checkData(kind, json.RawMessage(data), false)
		wantTeam, wantErr := refCheckData(kind, json.RawMessage(data))
		if team != wantTeam || (err == nil) != (wantErr == nil) {
			t.Fatalf("checkData(%q) = %q, %v; reference %q, %v", data, team, err, wantTeam, wantErr)
		}
		if err != nil && !errors.Is(err, wantErr.(*DecodeError).Reason) {
			t.Fatalf("checkData(%q) = %v; reference reason %v", data, err, wantErr.(*DecodeError).Reason)
		}
	})
}

func FuzzMarshalString(f *testing.F) {
	for _, s := range []string{"", "a", "<&>", "\"\\", "é", "\xff", "\u2028", "\x00\x1f\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return // empty optional attributes are left out
		}
		ev := Event{SpecVersion: s, ID: s, Source: s, Type: s, Subject: s, DataContentType: s}
		got, err := ev.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		q, _ := json.Marshal(s)
		want := fmt.Sprintf(`{"specversion":%[1]s,"id":%[1]s,"source":%[1]s,"type":%[1]s,"subject":%[1]s,"datacontenttype":%[1]s}`, q)
		if string(got) != want {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `null`, `true`, `false`, `nul`, `0`, `-0`, `01`, `-`, `1.`, `1.5e`, `1e+9`, `-12.5E-3`,
		`"a\u00e9\n\"\\\/"`, `"\x"`, "\"\x01\"", "\"\xff\"", `"\u12G4"`, `{"a":1,}`, `[1,]`, `{"a" 1}`, `{1:2}`,
		` {"a" : [ 1 , {"b":null} ] } `, `{"a":1}{}`, `[[[[]]]]`, `"abc`, `tru`, "[1\n]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		valid, compact := scanJSON(b)
		if want := json.Valid(b); valid != want {
			t.Fatalf("scanJSON(%q) valid = %v, json.Valid = %v", b, valid, want)
		}
		if !valid {
			return
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			t.Fatal(err)
		}
		if isCompact := bytes.Equal(c.Bytes(), b); compact != isCompact {
			t.Fatalf("scanJSON(%q) compact = %v, want %v", b, compact, isCompact)
		}
	})
}

func TestScanJSONDepth(t *testing.T) {
	for _, n := range []int{maxJSONDepth, maxJSONDepth + 1} {
		b := append(bytes.Repeat([]byte("["), n), bytes.Repeat([]byte("]"), n)...)
		if valid, _ := scanJSON(b); valid != json.Valid(b) {
			t.Errorf("depth %d: scanJSON %v, json.Valid %v", n, valid, json.Valid(b))
		}
	}
}

// refReadEnvelope is UnmarshalJSON as first written: decode the object into
// a map, then each attribute into a string. The one-walk readEnvelope must
// agree on every valid JSON object.
func refReadEnvelope(b []byte) (Event, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return Event{}, err
	}
	var e Event
	getStr := func(name string, dst *string) error {
		raw, ok := m[name]
		if !ok || string(raw) == "null" {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("attribute %s is not a string", name)
		}
		return nil
	}
	for _, a := range []struct {
		name string
		dst  *string
	}{{"specversion", &e.SpecVersion}, {"id", &e.ID}, {"source", &e.Source}, {"type", &e.Type},
		{"subject", &e.Subject}, {"datacontenttype", &e.DataContentType}} {
		if err := getStr(a.name, a.dst); err != nil {
			return Event{}, err
		}
	}
	var ts string
	if err := getStr("time", &ts); err != nil {
		return Event{}, err
	}
	if ts != "" {
		t, err := parseTime(ts)
		if err != nil {
			return Event{}, fmt.Errorf("attribute time %q is not RFC 3339", ts)
		}
		e.Time = t
	}
	if raw, ok := m["data"]; ok && string(raw) != "null" {
		e.Data = append(json.RawMessage(nil), raw...)
	}
	for name, raw := range m {
		if coreAttrs[name] {
			continue
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]json.RawMessage)
		}
		e.Extensions[name] = append(json.RawMessage(nil), raw...)
	}
	return e, nil
}

func FuzzReadEnvelope(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"specversion":"1.0","id":"a","source":"s","type":"bhiv.reward","time":"2026-01-01T00:00:00Z","data":{"x":1}}`,
		`{"id":1}`, `{"id":"a","id":"b"}`, `{"time":"nope"}`, `{"time":"x","time":"2026-01-01T00:00:00+02:00"}`,
		`{"data":null,"ext":[1,{"a":"}"}],"Ext":"x"}`, `{"i\u0064":"esc","subject":"t\u00e9"}`, ` { "type" : "t" , "data" : { } } `,
		`{"id":"a\xff"}`, `{"source":null,"x":null}`, `{"id":"1","id":2}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		if valid, _ := scanJSON(b); !valid || firstNonSpace(b) != '{' {
			return
		}
		want, wantErr := refReadEnvelope(b)
		var got Event
		err := got.readEnvelope(b)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("readEnvelope(%q) error %v, reference %v", s, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("readEnvelope(%q) = %+v, reference %+v", s, got, want)
		}
	})
}
