// Package config holds the helpers of the Config habit: each package's
// Config has a WithDefaults method, which returns the config with every zero
// field set to its default, and a Validate method, which checks the config
// after defaults. Default and Logger are the steps most WithDefaults
// methods are made of; Ready is how every constructor starts: defaults,
// then Validate.
//
// The package imports nothing of bhiv, so that every package, the root
// package included, may use it.
package config
