package bhiv_test

import (
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

func TestStreamConfigDefaults(t *testing.T) {
	c := bhiv.StreamConfig{}.WithDefaults()
	want := bhiv.StreamConfig{Name: "BHIV", SubjectPrefix: "bhiv.events", Replicas: 1, MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute}
	if c != want {
		t.Errorf("WithDefaults = %+v, want %+v", c, want)
	}
	if err := (bhiv.StreamConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	for name, bad := range map[string]bhiv.StreamConfig{
		"name with dot":           {Name: "BH.IV"},
		"name with space":         {Name: "B IV"},
		"prefix with wildcard":    {SubjectPrefix: "bhiv.*"},
		"prefix empty token":      {SubjectPrefix: "bhiv..events"},
		"too many replicas":       {Replicas: 6},
		"negative replicas":       {Replicas: -1},
		"duplicates over max age": {MaxAge: time.Minute, Duplicates: time.Hour},
		"negative duplicates":     {Duplicates: -time.Second},
		"negative max age":        {MaxAge: -time.Second},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, bad)
		}
	}
}
