package sinks

import "testing"

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://core:9000/bhiv/core", "http://core:9000/bhiv/core"},
		{"https://bhiv:s3cret@core:9000/x", "https://REDACTED@core:9000/x"},
		{"nats://tok3n@nats:4222", "nats://REDACTED@nats:4222"},
		{"http://core/x?token=abc&v=1", "http://core/x?token=REDACTED&v=REDACTED"},
		{"nats://a:b@n1:4222,nats://n2:4222,nats://c:d@n3:4222", "nats://REDACTED@n1:4222,nats://n2:4222,nats://REDACTED@n3:4222"},
		{"http://us er:p%zz@host/p", "http://REDACTED@host/p"}, // does not parse
		{"s3://key:secret@bucket/prefix", "s3://REDACTED@bucket/prefix"},
		{"./data/bucket", "./data/bucket"},
		{"127.0.0.1:8081", "127.0.0.1:8081"},
		{"execution=0.7,reward=0.3", "execution=0.7,reward=0.3"},
		{"", ""},
	} {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
