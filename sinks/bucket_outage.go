package sinks

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// bucketProbeEvery is how often an unavailable bucket is probed.
const bucketProbeEvery = 500 * time.Millisecond

// outage is a bucket's down state, the part of it the Bucket and the
// S3Bucket share: down while the bucket cannot take writes, until a probe,
// at most every bucketProbeEvery, finds it writable again.
type outage struct {
	down      atomic.Bool
	probeMu   sync.Mutex
	nextProbe time.Time // while down, no probe before then
}

// markDown marks the bucket down and reports whether it was up, when the
// caller logs the outage. The first probe is due after bucketProbeEvery.
func (o *outage) markDown() bool {
	if o.down.Swap(true) {
		return false
	}
	o.probeMu.Lock()
	o.nextProbe = time.Now().Add(bucketProbeEvery)
	o.probeMu.Unlock()
	return true
}

// available is the heart of Available: it reports true when the bucket is
// up; while it is down, false before nextProbe, and after it what probe
// returns, probe being called with probeMu held.
func (o *outage) available(probe func() bool) bool {
	if !o.down.Load() {
		return true
	}
	o.probeMu.Lock()
	defer o.probeMu.Unlock()
	if !o.down.Load() {
		return true
	}
	if time.Now().Before(o.nextProbe) {
		return false
	}
	return probe()
}

// Available reports whether the bucket can take files: false after a write
// failed and a probe file could not be written in the bucket directory
// either (read-only, full, gone, replaced by a file), until a probe, at most
// every 500ms, succeeds. The consumer holds events (and pauses intake) while
// it is false.
func (b *Bucket) Available() bool {
	return b.available(func() bool {
		if err := b.probe(); err != nil {
			b.nextProbe = time.Now().Add(bucketProbeEvery)
			return false
		}
		b.down.Store(false)
		b.log.Info("bucket: available again", "dir", b.dir)
		return true
	})
}

// probe writes, syncs (unless NoFsync) and removes a small file in the
// bucket directory, recreating the directory when it is missing.
func (b *Bucket) probe() error {
	if err := b.mkdirAll(b.dir); err != nil {
		return err
	}
	name := filepath.Join(b.dir, tmpPrefix+"probe-"+pidTag+"-"+randomSuffix())
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, bucketFilePerm)
	if err != nil {
		return diskErr("create probe file", name, err)
	}
	defer os.Remove(name)
	_, err = f.Write(make([]byte, 512))
	if err == nil && !b.cfg.NoFsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskErr("write probe file", name, err)
	}
	return nil
}
