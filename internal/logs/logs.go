// Package logs owns the logger a component falls back to when it is built
// without one.
package logs

import "github.com/sirupsen/logrus"

// OrQuiet returns l, or, when l is nil, a logger of its own that writes
// warnings and errors only (to stderr), so a component built without a
// logger (tests, tools) stays quiet.
func OrQuiet(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	q := logrus.New()
	q.SetLevel(logrus.WarnLevel)
	return q
}
