package outboxprom_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// A small PromQL checker for the expressions shipped in examples/monitoring,
// so that a damaged expression fails a test rather than a dashboard panel.
// It parses the subset of PromQL that alerting rules and dashboards use
// (selectors, range vectors and subqueries, functions, aggregations,
// binary operators with their modifiers) and checks what a parse alone
// does not: function names and arities, metric and label names, and how
// the table-wide gauges are aggregated.

// promFunctions are PromQL's functions (Prometheus 3, the experimental
// ones included, as its parser knows them), with their minimum and
// maximum number of arguments (-1: any number).
var promFunctions = map[string][2]int{
	"abs": {1, 1}, "absent": {1, 1}, "absent_over_time": {1, 1}, "acos": {1, 1}, "acosh": {1, 1},
	"asin": {1, 1}, "asinh": {1, 1}, "atan": {1, 1}, "atanh": {1, 1}, "avg_over_time": {1, 1},
	"ceil": {1, 1}, "changes": {1, 1}, "clamp": {3, 3}, "clamp_max": {2, 2}, "clamp_min": {2, 2},
	"cos": {1, 1}, "cosh": {1, 1}, "count_over_time": {1, 1}, "first_over_time": {1, 1}, "day_of_month": {0, 1},
	"day_of_week": {0, 1}, "day_of_year": {0, 1}, "days_in_month": {0, 1}, "deg": {1, 1},
	"delta": {1, 1}, "deriv": {1, 1}, "double_exponential_smoothing": {3, 3}, "exp": {1, 1},
	"floor": {1, 1}, "histogram_avg": {1, 1}, "histogram_count": {1, 1}, "histogram_fraction": {3, 3},
	"histogram_quantile": {2, 2}, "histogram_stddev": {1, 1}, "histogram_stdvar": {1, 1},
	"histogram_sum": {1, 1}, "hour": {0, 1}, "idelta": {1, 1},
	"increase": {1, 1}, "irate": {1, 1}, "label_join": {3, -1}, "label_replace": {5, 5},
	"last_over_time": {1, 1}, "ln": {1, 1}, "log10": {1, 1}, "log2": {1, 1}, "mad_over_time": {1, 1},
	"max_over_time": {1, 1}, "min_over_time": {1, 1}, "minute": {0, 1}, "month": {0, 1}, "pi": {0, 0},
	"predict_linear": {2, 2}, "present_over_time": {1, 1}, "quantile_over_time": {2, 2}, "rad": {1, 1},
	"rate": {1, 1}, "resets": {1, 1}, "round": {1, 2}, "scalar": {1, 1}, "sgn": {1, 1}, "sin": {1, 1},
	"sinh": {1, 1}, "sort": {1, 1}, "sort_by_label": {1, -1}, "sort_by_label_desc": {1, -1},
	"sort_desc": {1, 1}, "sqrt": {1, 1}, "stddev_over_time": {1, 1}, "stdvar_over_time": {1, 1},
	"sum_over_time": {1, 1}, "tan": {1, 1}, "tanh": {1, 1}, "time": {0, 0}, "timestamp": {1, 1},
	"vector": {1, 1}, "year": {0, 1},
}

// rangeFunctions take a range vector (a selector with [d], or a subquery)
// as their first argument, or, for quantile_over_time, their second.
var rangeFunctions = map[string]int{
	"absent_over_time": 0, "avg_over_time": 0, "changes": 0, "count_over_time": 0, "delta": 0,
	"deriv": 0, "double_exponential_smoothing": 0, "first_over_time": 0, "idelta": 0, "increase": 0,
	"irate": 0, "last_over_time": 0, "mad_over_time": 0, "max_over_time": 0, "min_over_time": 0,
	"predict_linear": 0, "present_over_time": 0, "quantile_over_time": 1, "rate": 0, "resets": 0,
	"stddev_over_time": 0, "stdvar_over_time": 0, "sum_over_time": 0,
}

// promAggregations are the aggregation operators; the value says whether
// the operator takes a parameter before the vector (topk(5, v)).
var promAggregations = map[string]bool{
	"sum": false, "min": false, "max": false, "avg": false, "group": false, "stddev": false,
	"stdvar": false, "count": false, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

// promKeywords cannot name a metric.
var promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "atan2"}

// grafanaRangeVars are the Grafana variables a dashboard may put between
// the brackets of a range vector.
var grafanaRangeVars = []string{"$__rate_interval", "$__interval", "$__range"}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokDuration
	tokString
	tokVar // a Grafana variable, $name or ${name}
	tokPunct
)

type token struct {
	kind tokKind
	text string
	pos  int
}

var (
	durationRE = regexp.MustCompile(`^([0-9]+(ms|[smhdwy]))+`)
	numberRE   = regexp.MustCompile(`^(0[xX][0-9a-fA-F]+|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)`)
	varRE      = regexp.MustCompile(`^\$(\{[A-Za-z0-9_:.]+\}|[A-Za-z0-9_]+)`)
	// Two-character operators first.
	puncts = []string{"==", "!=", "<=", ">=", "=~", "!~", "(", ")", "{", "}", "[", "]", ",", ":", "+", "-", "*", "/", "%", "^", "<", ">", "="}
)

// lexPromQL splits an expression into tokens.
func lexPromQL(s string) ([]token, error) {
	var toks []token
	inRange := 0 // inside [...], where ':' separates a subquery's range and step
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '[':
			inRange++
		case ']':
			inRange--
		}
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
			continue
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at offset %d", i)
			}
			toks = append(toks, token{tokString, s[i : j+1], i})
			i = j + 1
			continue
		case c == '_' || c == ':' && inRange == 0 || unicode.IsLetter(rune(c)):
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == ':' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			toks = append(toks, token{tokIdent, s[i:j], i})
			i = j
			continue
		case c == '$':
			m := varRE.FindString(s[i:])
			if m == "" {
				return nil, fmt.Errorf("stray $ at offset %d", i)
			}
			toks = append(toks, token{tokVar, m, i})
			i += len(m)
			continue
		case c == '.' || unicode.IsDigit(rune(c)):
			if m := durationRE.FindString(s[i:]); m != "" && !isIdentByte(s, i+len(m)) {
				toks = append(toks, token{tokDuration, m, i})
				i += len(m)
				continue
			}
			if m := numberRE.FindString(s[i:]); m != "" {
				toks = append(toks, token{tokNumber, m, i})
				i += len(m)
				continue
			}
		}
		matched := false
		for _, p := range puncts {
			if strings.HasPrefix(s[i:], p) {
				toks = append(toks, token{tokPunct, p, i})
				i += len(p)
				matched = true
				break
			}
		}
		if !matched {
			return nil, fmt.Errorf("unexpected %q at offset %d", c, i)
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(s)}), nil
}

func isIdentByte(s string, i int) bool {
	return i < len(s) && (s[i] == '_' || unicode.IsLetter(rune(s[i])) || unicode.IsDigit(rune(s[i])))
}

// promNode is a node of a parsed expression.
type promNode struct {
	kind     string // number, string, selector, range, subquery, call, agg, binary, unary, paren
	name     string // metric, function, aggregation or operator
	text     string // a number's or string's literal text
	labels   []string
	without  bool // an aggregation's grouping is without (labels), not by (labels)
	grouped  bool // an aggregation has a by or without clause
	matchers []string
	args     []*promNode
	pos      int
}

type promParser struct {
	toks []token
	i    int
}

// parsePromQL parses an expression, checking that its brackets are
// balanced and that it is well-formed.
func parsePromQL(s string) (*promNode, error) {
	if err := checkBalanced(s); err != nil {
		return nil, err
	}
	toks, err := lexPromQL(s)
	if err != nil {
		return nil, err
	}
	p := &promParser{toks: toks}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, fmt.Errorf("unexpected %q at offset %d", t.text, t.pos)
	}
	return n, nil
}

// checkBalanced checks that (), [] and {} pair up outside strings.
func checkBalanced(s string) error {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{'}
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case c == ')' || c == ']' || c == '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %q at offset %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if quote != 0 {
		return fmt.Errorf("unterminated string")
	}
	if len(stack) > 0 {
		return fmt.Errorf("%d unclosed %q", len(stack), stack[len(stack)-1])
	}
	return nil
}

func (p *promParser) peek() token { return p.toks[p.i] }
func (p *promParser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *promParser) is(kind tokKind, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}

func (p *promParser) expect(text string) error {
	t := p.next()
	if t.kind != tokPunct || t.text != text {
		return fmt.Errorf("want %q at offset %d, got %q", text, t.pos, t.text)
	}
	return nil
}

// binaryPrec returns the precedence of the binary operator t, or 0.
func binaryPrec(t token) int {
	switch t.kind {
	case tokIdent:
		switch t.text {
		case "or":
			return 1
		case "and", "unless":
			return 2
		case "atan2":
			return 5
		}
	case tokPunct:
		switch t.text {
		case "==", "!=", "<=", ">=", "<", ">":
			return 3
		case "+", "-":
			return 4
		case "*", "/", "%":
			return 5
		case "^":
			return 6
		}
	}
	return 0
}

func (p *promParser) expr(minPrec int) (*promNode, error) {
	lhs, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		op := p.peek()
		prec := binaryPrec(op)
		if prec == 0 || prec <= minPrec {
			return lhs, nil
		}
		p.next()
		if p.is(tokIdent, "bool") {
			if prec != 3 {
				return nil, fmt.Errorf("bool after %q at offset %d", op.text, op.pos)
			}
			p.next()
		}
		if p.is(tokIdent, "on") || p.is(tokIdent, "ignoring") {
			p.next()
			if _, err := p.labelList(); err != nil {
				return nil, err
			}
			if p.is(tokIdent, "group_left") || p.is(tokIdent, "group_right") {
				p.next()
				if p.is(tokPunct, "(") {
					if _, err := p.labelList(); err != nil {
						return nil, err
					}
				}
			}
		}
		next := prec
		if op.text == "^" {
			next = prec - 1 // right-associative
		}
		rhs, err := p.expr(next)
		if err != nil {
			return nil, err
		}
		lhs = &promNode{kind: "binary", name: op.text, args: []*promNode{lhs, rhs}, pos: op.pos}
	}
}

func (p *promParser) unary() (*promNode, error) {
	if t := p.peek(); t.kind == tokPunct && (t.text == "-" || t.text == "+") {
		p.next()
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &promNode{kind: "unary", name: t.text, args: []*promNode{n}, pos: t.pos}, nil
	}
	n, err := p.primary()
	if err != nil {
		return nil, err
	}
	for p.is(tokPunct, "[") {
		open := p.next()
		if err := p.durationOrVar(); err != nil {
			return nil, err
		}
		kind := "range"
		if p.is(tokPunct, ":") {
			p.next()
			kind = "subquery"
			if !p.is(tokPunct, "]") {
				if err := p.durationOrVar(); err != nil {
					return nil, err
				}
			}
		}
		if err := p.expect("]"); err != nil {
			return nil, err
		}
		if kind == "range" && n.kind != "selector" {
			return nil, fmt.Errorf("range [..] at offset %d on a %s, not a selector", open.pos, n.kind)
		}
		n = &promNode{kind: kind, args: []*promNode{n}, pos: open.pos}
	}
	if p.is(tokIdent, "offset") {
		p.next()
		if p.is(tokPunct, "-") {
			p.next()
		}
		if err := p.durationOrVar(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (p *promParser) durationOrVar() error {
	t := p.next()
	switch {
	case t.kind == tokDuration:
		return nil
	case t.kind == tokVar && slices.Contains(grafanaRangeVars, t.text):
		return nil
	}
	return fmt.Errorf("want a duration at offset %d, got %q", t.pos, t.text)
}

func (p *promParser) primary() (*promNode, error) {
	t := p.next()
	switch t.kind {
	case tokNumber:
		return &promNode{kind: "number", text: t.text, pos: t.pos}, nil
	case tokString:
		return &promNode{kind: "string", text: t.text, pos: t.pos}, nil
	case tokPunct:
		switch t.text {
		case "(":
			n, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return &promNode{kind: "paren", args: []*promNode{n}, pos: t.pos}, nil
		case "{":
			p.i--
			return p.selector("", t.pos)
		}
	case tokIdent:
		switch {
		case t.text == "Inf" || t.text == "NaN" || t.text == "inf" || t.text == "nan":
			return &promNode{kind: "number", text: t.text, pos: t.pos}, nil
		case slices.Contains(promKeywords, t.text):
			return nil, fmt.Errorf("keyword %q where an expression belongs, at offset %d", t.text, t.pos)
		}
		if _, ok := promAggregations[t.text]; ok {
			return p.aggregation(t)
		}
		if p.is(tokPunct, "(") {
			return p.call(t)
		}
		return p.selector(t.text, t.pos)
	}
	if t.kind == tokEOF {
		return nil, fmt.Errorf("unexpected end of expression at offset %d", t.pos)
	}
	return nil, fmt.Errorf("unexpected %q at offset %d", t.text, t.pos)
}

// labelList reads (a, b, ...).
func (p *promParser) labelList() ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var labels []string
	for !p.is(tokPunct, ")") {
		t := p.next()
		if t.kind != tokIdent {
			return nil, fmt.Errorf("want a label name at offset %d, got %q", t.pos, t.text)
		}
		labels = append(labels, t.text)
		if !p.is(tokPunct, ",") {
			break
		}
		p.next()
	}
	return labels, p.expect(")")
}

func (p *promParser) args() ([]*promNode, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var args []*promNode
	for !p.is(tokPunct, ")") {
		a, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		args = append(args, a)
		if !p.is(tokPunct, ",") {
			break
		}
		p.next()
	}
	return args, p.expect(")")
}

func (p *promParser) aggregation(op token) (*promNode, error) {
	n := &promNode{kind: "agg", name: op.text, pos: op.pos}
	grouping := func() error {
		if p.is(tokIdent, "by") || p.is(tokIdent, "without") {
			if n.grouped {
				return fmt.Errorf("second grouping clause for %s at offset %d", op.text, p.peek().pos)
			}
			n.without = p.next().text == "without"
			n.grouped = true
			var err error
			n.labels, err = p.labelList()
			return err
		}
		return nil
	}
	if err := grouping(); err != nil {
		return nil, err
	}
	args, err := p.args()
	if err != nil {
		return nil, err
	}
	n.args = args
	if err := grouping(); err != nil {
		return nil, err
	}
	want := 1
	if promAggregations[op.text] {
		want = 2
	}
	if len(args) != want {
		return nil, fmt.Errorf("%s at offset %d takes %d arguments, got %d", op.text, op.pos, want, len(args))
	}
	return n, nil
}

func (p *promParser) call(fn token) (*promNode, error) {
	arity, ok := promFunctions[fn.text]
	if !ok {
		return nil, fmt.Errorf("unknown function %q at offset %d", fn.text, fn.pos)
	}
	args, err := p.args()
	if err != nil {
		return nil, err
	}
	if len(args) < arity[0] || arity[1] >= 0 && len(args) > arity[1] {
		want := fmt.Sprint(arity[0])
		switch {
		case arity[1] < 0:
			want += " or more"
		case arity[1] > arity[0]:
			want += fmt.Sprintf(" to %d", arity[1])
		}
		return nil, fmt.Errorf("%s at offset %d takes %s arguments, got %d", fn.text, fn.pos, want, len(args))
	}
	if i, ok := rangeFunctions[fn.text]; ok && i < len(args) && args[i].kind != "range" && args[i].kind != "subquery" {
		return nil, fmt.Errorf("%s at offset %d wants a range vector (a selector with [duration]), got a %s", fn.text, fn.pos, args[i].kind)
	}
	return &promNode{kind: "call", name: fn.text, args: args, pos: fn.pos}, nil
}

func (p *promParser) selector(name string, pos int) (*promNode, error) {
	n := &promNode{kind: "selector", name: name, pos: pos}
	if p.is(tokPunct, "{") {
		p.next()
		for !p.is(tokPunct, "}") {
			l := p.next()
			if l.kind != tokIdent {
				return nil, fmt.Errorf("want a label name at offset %d, got %q", l.pos, l.text)
			}
			op := p.next()
			if op.kind != tokPunct || !slices.Contains([]string{"=", "!=", "=~", "!~"}, op.text) {
				return nil, fmt.Errorf("want a matcher operator at offset %d, got %q", op.pos, op.text)
			}
			v := p.next()
			if v.kind != tokString {
				return nil, fmt.Errorf("want a string at offset %d, got %q", v.pos, v.text)
			}
			n.matchers = append(n.matchers, l.text)
			if l.text == "__name__" && op.text == "=" {
				n.name, _ = strconv.Unquote(v.text)
			}
			if !p.is(tokPunct, ",") {
				break
			}
			p.next()
		}
		if err := p.expect("}"); err != nil {
			return nil, err
		}
	}
	if n.name == "" {
		return nil, fmt.Errorf("selector at offset %d names no metric", pos)
	}
	return n, nil
}

// walk calls fn on n and every node below it, with the chain of nodes
// above it (the root first).
func (n *promNode) walk(above []*promNode, fn func(n *promNode, above []*promNode)) {
	fn(n, above)
	above = append(above, n)
	for _, a := range n.args {
		a.walk(above, fn)
	}
}
