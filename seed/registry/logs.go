package registry

import (
	"context"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// RouteLogs sends what the distribution engine logs to l instead of stderr: its warnings
// and errors (a failed request, a storage error) as they are, its per-request lines not
// at all. Distribution logs through logrus's process-wide standard logger and offers no
// per-App logger, so this is process-wide too: a program calls it once, before serving.
func RouteLogs(l *slog.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetLevel(logrus.WarnLevel)
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(slogHook{l})
}

type slogHook struct{ l *slog.Logger }

func (slogHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h slogHook) Fire(e *logrus.Entry) error {
	level := slog.LevelWarn
	if e.Level <= logrus.ErrorLevel {
		level = slog.LevelError
	}
	attrs := []slog.Attr{slog.String("component", "registry")}
	for _, k := range []string{"err.code", "err.message", "err.detail", "http.request.method", "http.request.uri", "http.response.status", "vars.name", "error"} {
		if v, ok := e.Data[k]; ok {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	h.l.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}
