package sim

import (
	"bytes"

	"gonum.org/v1/plot/vg"

	"meshkit.dev/meshkit/internal/atomicfile"
)

func writeCanvas(path string, c vg.CanvasWriterTo) error {
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, buf.Bytes(), 0o644)
}
