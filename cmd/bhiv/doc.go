// Command bhiv carries HackaVerse execution and reward events from NATS
// JetStream to BHIV Core and the BHIV Bucket. Run `bhiv help` for its
// subcommands.
package main
