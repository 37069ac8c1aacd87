package bhiv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// typedFields names the fields of a kind's data whose type is checked.
type typedFields struct{ numeric, strs []string }

// dataFields names the fields of each kind's data whose type is checked.
var dataFields = map[Kind]typedFields{
	KindExecution: {numeric: []string{"duration_ms"}, strs: []string{"action", "status", "error"}},
	KindReward:    {numeric: []string{"reward"}, strs: []string{"execution_id", "reason"}},
}

// checkData checks that data is a JSON object whose known fields have the
// right types, and returns its team_id ("" when absent). It reads the object
// in one pass without decoding it: publishers call it for every event.
// valid says that data is known to be valid JSON already.
func checkData(kind Kind, data json.RawMessage, valid bool) (string, error) {
	if len(data) == 0 {
		return "", &DecodeError{Reason: ErrMissingTeam, Detail: "data is missing"}
	}
	if !valid {
		valid, _ = scanJSON(data)
	}
	if !valid {
		return "", invalidData(data)
	}
	if firstNonSpace(data) != '{' {
		return "", &DecodeError{Reason: ErrNotObject, Detail: "data is not a JSON object"}
	}
	want := dataFields[kind]
	var team string
	var err error
	eachMember(data, func(key, val []byte) bool {
		if string(key) == "team_id" {
			team, err = teamID(val)
		} else {
			err = want.check(key, val)
		}
		return err == nil
	})
	if err != nil {
		return "", err
	}
	return team, nil
}

// invalidData is the error for data that is not valid JSON: not an object
// when it does not start like one, else the JSON decoder's reason.
func invalidData(data []byte) error {
	if firstNonSpace(data) != '{' {
		return &DecodeError{Reason: ErrNotObject, Detail: "data is not a JSON object"}
	}
	var v any
	err := json.Unmarshal(data, &v)
	detail := "data: invalid JSON"
	if err != nil {
		detail = "data: " + err.Error()
	}
	return &DecodeError{Reason: ErrNotJSON, Detail: detail}
}

// teamID returns the value of a team_id member: "" for null, an error when
// it is not a string.
func teamID(val []byte) (string, error) {
	if string(val) == "null" {
		return "", nil
	}
	if val[0] != '"' {
		return "", &DecodeError{Reason: ErrInvalidData, Detail: "data.team_id is not a string"}
	}
	return jsonStringValue(val), nil
}

// check checks the type of one member of the data, when f names it: a
// number or a string, or null for either.
func (f typedFields) check(key, val []byte) error {
	if string(val) == "null" {
		return nil
	}
	for _, name := range f.numeric {
		if string(key) == name {
			if !isJSONNumber(val) {
				return &DecodeError{Reason: ErrInvalidData, Detail: fmt.Sprintf("data.%s is not a number", name)}
			}
			return nil
		}
	}
	for _, name := range f.strs {
		if string(key) == name && val[0] != '"' {
			return &DecodeError{Reason: ErrInvalidData, Detail: fmt.Sprintf("data.%s is not a string", name)}
		}
	}
	return nil
}

// Execution is the data of an execution event. Extra holds any other fields;
// they are encoded beside the known ones and never dropped. Decoded numbers
// in Extra are json.Number, so they keep every digit.
type Execution struct {
	TeamID     string         `json:"team_id"`
	Action     string         `json:"action"`
	Status     string         `json:"status,omitempty"`
	Output     any            `json:"output,omitempty"`
	Error      string         `json:"error,omitempty"`
	DurationMS int64          `json:"duration_ms"`
	Extra      map[string]any `json:"-"`
}

// Reward is the data of a reward event. Extra holds any other fields; they
// are encoded beside the known ones and never dropped. Decoded numbers in
// Extra are json.Number, so they keep every digit.
type Reward struct {
	TeamID      string         `json:"team_id"`
	ExecutionID string         `json:"execution_id,omitempty"`
	Reward      float64        `json:"reward"`
	Reason      string         `json:"reason,omitempty"`
	Extra       map[string]any `json:"-"`
}

type executionFields Execution

type rewardFields Reward

// MarshalJSON encodes the known fields and the extra ones in one object.
func (x Execution) MarshalJSON() ([]byte, error) { return mergeExtra(executionFields(x), x.Extra) }

// UnmarshalJSON decodes the known fields and keeps the rest in Extra.
func (x *Execution) UnmarshalJSON(b []byte) error {
	var f executionFields
	extra, err := splitExtra(b, &f, "team_id", "action", "status", "output", "error", "duration_ms")
	if err != nil {
		return err
	}
	*x = Execution(f)
	x.Extra = extra
	return nil
}

// MarshalJSON encodes the known fields and the extra ones in one object.
func (x Reward) MarshalJSON() ([]byte, error) { return mergeExtra(rewardFields(x), x.Extra) }

// UnmarshalJSON decodes the known fields and keeps the rest in Extra.
func (x *Reward) UnmarshalJSON(b []byte) error {
	var f rewardFields
	extra, err := splitExtra(b, &f, "team_id", "execution_id", "reward", "reason")
	if err != nil {
		return err
	}
	*x = Reward(f)
	x.Extra = extra
	return nil
}

func mergeExtra(known any, extra map[string]any) ([]byte, error) {
	b, err := json.Marshal(known)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	// Keep the known fields as encoded (a map[string]any would turn large
	// integers into float64 and lose digits).
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, taken := m[k]; taken {
			continue
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("extra field %s: %w", k, err)
		}
		m[k] = raw
	}
	return json.Marshal(m)
}

// splitExtra decodes b into known and returns the fields known does not
// name.
func splitExtra(b []byte, known any, names ...string) (map[string]any, error) {
	if err := json.Unmarshal(b, known); err != nil {
		return nil, err
	}
	// Numbers stay json.Number so that no digit is lost on the way back.
	var all map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil {
		return nil, err
	}
	for _, n := range names {
		delete(all, n)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// Execution decodes the event's data as execution data.
func (e *Event) Execution() (Execution, error) {
	return decodeData[Execution](e, KindExecution, "an execution")
}

// Reward decodes the event's data as reward data.
func (e *Event) Reward() (Reward, error) {
	return decodeData[Reward](e, KindReward, "a reward")
}

// decodeData decodes the data of e, which must be of kind k (what names k
// in the error otherwise), as a T.
func decodeData[T any](e *Event, k Kind, what string) (T, error) {
	var x T
	if e.Kind() != k {
		return x, errors.New("event is not " + what)
	}
	err := json.Unmarshal(e.Data, &x)
	return x, err
}
