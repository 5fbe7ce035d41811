package sqlstore

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envModel makes TestRelayModel and TestWatermarkModel fail, not skip,
// when spin or a C compiler is missing (CI sets it).
const envModel = "OUTBOX_TEST_MODEL"

// modelCase is one check of a model: the spin flags, and the property
// whose assertion must fail ("" for the protocol as specified, which must
// hold in a complete search).
type modelCase struct {
	name  string
	flags []string
	fails string
}

// modelCases: relay.pml, the protocol, then each race switch (see
// MODEL.md) with the property it breaks.
var modelCases = []modelCase{
	{name: "protocol"},
	{name: "R1 stale in-flight snapshot", flags: []string{"-DSTALE_INFLIGHT"}, fails: "P1_duplicate"},
	{name: "R2 no fence", flags: []string{"-DNO_FENCE"}, fails: "P5_unfenced_write"},
	{name: "R3 liveness on the claim lease", flags: []string{"-DCLAIM_LEASE_LIVENESS"}, fails: "P4_no_live_owner"},
	{name: "R4 no recheck at take", flags: []string{"-DNO_RECHECK"}, fails: "P1_duplicate"},
	{name: "take without finished-since-read", flags: []string{"-DNO_FINISHED"}, fails: "P1_duplicate"},
	{name: "claimByID without the head check", flags: []string{"-DLOOSE_HEAD"}, fails: "P2_order"},
}

// watermarkCases: relay_watermark.pml, watermark delivery as specified,
// then each switch (see MODEL.md) with the property it breaks.
var watermarkCases = []modelCase{
	{name: "watermark"},
	{name: "W1 no late read", flags: []string{"-DNO_LATE_READ"}, fails: "P6_skipped"},
	{name: "W2 record an unresolved segment", flags: []string{"-DRECORD_UNRESOLVED"}, fails: "P6_skipped"},
	{name: "W3 give back without the ahead rows", flags: []string{"-DNO_AHEAD_FLUSH"}, fails: "P1_duplicate"},
	{name: "W4 front past cut late rows", flags: []string{"-DLATE_CUT_ADVANCE"}, fails: "P6_skipped"},
	{name: "W5 park rows delivered ahead", flags: []string{"-DPARK_AHEAD"}, fails: "P1_duplicate"},
	{name: "W6 claim by IDs of a covered row", flags: []string{"-DBYID_COVERED"}, fails: "P1_duplicate"},
	{name: "W7 rows to park hold nothing", flags: []string{"-DPARK_NO_HOLD"}, fails: "P2_order"},
	{name: "W8 claim by IDs blind to late rows", flags: []string{"-DBYID_NO_LATE"}, fails: "P2_order"},
	{name: "W9 claim by IDs without the park hold", flags: []string{"-DBYID_NO_HOLD"}, fails: "P2_order"},
	{name: "W10 mark fenced by owner, not token", flags: []string{"-DMARK_BY_OWNER"}, fails: "P6_skipped"},
}

// TestRelayModel checks the partition-ownership protocol with spin: the
// model as specified must hold every property in a complete search, and
// each race switch must yield a counterexample for the property it
// breaks.
func TestRelayModel(t *testing.T) {
	// A search of the whole model visits over a million states.
	checkModel(t, "relay.pml", modelCases, 100000)
}

// TestWatermarkModel checks watermark delivery (the delivery of a
// partition's events recorded as a watermark) with spin, as
// TestRelayModel does the ownership protocol.
func TestWatermarkModel(t *testing.T) {
	// A search of the whole model visits over four million states.
	checkModel(t, "relay_watermark.pml", watermarkCases, 3000000)
}

// checkModel runs the cases of the model main (a file of this package,
// which may include the other relay*.pml files). A complete search that
// stores fewer than minStates states ended early.
func checkModel(t *testing.T, main string, cases []modelCase, minStates int) {
	tools := modelTools(t)
	// the model and the files it includes.
	files, err := filepath.Glob("relay*.pml")
	if err != nil || !slices.Contains(files, main) {
		t.Fatalf("the model's files: %v %v", files, err)
	}
	model := map[string][]byte{}
	for _, f := range files {
		if model[f], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out, trail := runModel(t, tools, model, main, c.flags)
			errs := pick(t, out, `errors: (\d+)`)
			stored := pick(t, out, `(\d+) states, stored`)
			t.Logf("spin %s: %d states, %d errors", strings.Join(c.flags, " "), stored, errs)
			for _, bad := range []string{"max search depth too small", "out of memory", "reached -DMEMLIM"} {
				if strings.Contains(out, bad) {
					t.Fatalf("the search was cut short (%s):\n%s", bad, out)
				}
			}
			if c.fails == "" {
				if errs != 0 || strings.Contains(out, "Search not completed") || trail != "" {
					t.Fatalf("the protocol violates a property:\n%s\n%s", out, trail)
				}
				if stored < minStates {
					t.Fatalf("only %d states: the search ended early:\n%s", stored, out)
				}
				return
			}
			if errs == 0 || trail == "" {
				t.Fatalf("no counterexample for %s:\n%s", c.fails, out)
			}
			if want := "assertion violated  !(" + c.fails + ")"; !strings.Contains(out, want) {
				t.Fatalf("want %q, got:\n%s", want, out)
			}
			t.Logf("counterexample:\n%s", trail)
		})
	}
}

// modelTools returns the paths of spin and a C compiler. It skips the
// test when one is missing, or fails it when envModel is set.
func modelTools(t *testing.T) map[string]string {
	t.Helper()
	tools := map[string]string{}
	for _, tool := range [][]string{{"spin"}, {"gcc", "cc"}} {
		for _, name := range tool {
			if p, err := exec.LookPath(name); err == nil {
				tools[tool[0]] = p
				break
			}
		}
		if tools[tool[0]] == "" {
			msg := "model check needs " + strings.Join(tool, " or ") + " on PATH (Debian: apt-get install spin gcc)"
			if os.Getenv(envModel) == "1" {
				t.Fatalf("%s is set: %s", envModel, msg)
			}
			t.Skipf("model check skipped: %s; set %s=1 to make this a failure", msg, envModel)
		}
	}
	return tools
}

// runModel generates, compiles and runs the verifier of the model main
// (model: file name -> text) with flags in a directory of its own, and returns its report and, when it found a
// violation, the replayed counterexample (the model's own trace lines).
func runModel(t *testing.T, tools map[string]string, model map[string][]byte, main string, flags []string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	for name, text := range model {
		if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	run := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		// pan exits 0 whatever it finds; spin -t may exit non-zero at the
		// end of a trail.
		if err != nil && name != tools["spin"] {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	gen := run(tools["spin"], append(append([]string{"-a"}, flags...), main)...)
	if _, err := os.Stat(filepath.Join(dir, "pan.c")); err != nil {
		t.Fatalf("spin -a made no verifier: %v\n%s", err, gen)
	}
	// The complete search is quickest in all at -O1; a switch's search
	// stops at its first counterexample, and -O0 compiles fastest. MEMLIM
	// bounds the memory (MB).
	opt := "-O0"
	if len(flags) == 0 {
		opt = "-O1"
	}
	run(tools["gcc"], opt, "-w", "-DSAFETY", "-DMEMLIM=2048", "-o", "pan", "pan.c")
	out := run(filepath.Join(dir, "pan"), "-m100000", "-w21")
	if _, err := os.Stat(filepath.Join(dir, main+".trail")); err != nil {
		return out, ""
	}
	replay := run(tools["spin"], append(append([]string{"-t"}, flags...), main)...)
	var trail []string
	for line := range strings.Lines(replay) {
		if s := strings.TrimSpace(line); s != "" && (strings.HasPrefix(s, "t") || strings.HasPrefix(s, "spin:")) {
			trail = append(trail, s)
		}
	}
	return out, strings.Join(trail, "\n")
}

// pick returns the integer of the first match of re's group in out.
func pick(t *testing.T, out, re string) int {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in the verifier's report:\n%s", re, out)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
