package main

import (
	"io"

	"github.com/hashicorp/go-hclog"

	"raftgres/config"
)

// newLogger builds the root logger from the log: section.
func newLogger(cfg config.Log, out io.Writer) hclog.Logger {
	level := hclog.LevelFromString(cfg.Level)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raftgres",
		Level:      level,
		Output:     out,
		JSONFormat: cfg.Format == "json",
		TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	})
}
