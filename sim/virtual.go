package sim

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// RunVirtual runs the scenario in a testing/synctest bubble: time is virtual and advances
// only when every goroutine of the run is blocked, so latencies do not depend on how busy
// the machine is. CPU work costs no virtual time, so agents sleep opt.CostModel
// (MeasuredCost by default) per bundle. It must be called from a test (or from
// `meshkit sim --clock virtual`, which runs one).
func RunVirtual(t *testing.T, sc *Scenario, opt Options) (res *Result, err error) {
	if opt.CostModel == nil {
		opt.CostModel = MeasuredCost
	}
	opt.Settle = synctest.Wait
	start := time.Now() // outside the bubble: real time
	synctest.Test(t, func(t *testing.T) {
		res, err = Run(context.Background(), sc, opt)
		// Everything is closed, but writes still in flight on simulated links (and the
		// protocol handshakes waiting for them) need virtual time to finish: once this
		// function returns, time stops and the bubble reports them as deadlocked.
		time.Sleep(5 * time.Second)
		synctest.Wait()
	})
	if res != nil {
		res.Clock = "virtual"
		res.WallSeconds = time.Since(start).Seconds()
	}
	return res, err
}
