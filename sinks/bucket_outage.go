package sinks

import (
	"os"
	"path/filepath"
	"time"
)

// bucketProbeEvery is how often an unavailable bucket is probed.
const bucketProbeEvery = 500 * time.Millisecond

// Available reports whether the bucket can take files: false after a write
// failed and a probe file could not be written in the bucket directory
// either (read-only, full, gone, replaced by a file), until a probe, at most
// every 500ms, succeeds. The consumer holds events (and pauses intake) while
// it is false.
func (b *Bucket) Available() bool {
	if !b.down.Load() {
		return true
	}
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if !b.down.Load() {
		return true
	}
	if time.Now().Before(b.nextProbe) {
		return false
	}
	if err := b.probe(); err != nil {
		b.nextProbe = time.Now().Add(bucketProbeEvery)
		return false
	}
	b.down.Store(false)
	b.log.Info("bucket: available again", "dir", b.dir)
	return true
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
