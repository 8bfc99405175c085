package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"time"
)

// Scenario timing.
const (
	quietPeriod     = 250 * time.Millisecond // no new request and nothing busy for this long ends a step
	pollInterval    = 25 * time.Millisecond
	stepTimeout     = 30 * time.Second
	messagesOpened  = 5
	secondFolder    = "Archive"
	webElementKey   = "element-6066-11e4-a52e-4f735466cecf"
	loginPagePath   = "/?_task=login"
	screenshotDelay = 300 * time.Millisecond
)

// pageStateJS reports whether the page (and the preview frame) is busy,
// how many resources it loaded, and when the last one ended, on the epoch
// clock (performance.timeOrigin + responseEnd), so a step ends at its
// last response rather than when the poll noticed it.
const pageStateJS = `
var f = document.getElementById('messagecontframe');
var fr = 'complete', fsrc = '';
try { if (f && f.contentDocument) { fr = f.contentDocument.readyState; fsrc = f.contentWindow.location.href; } } catch (e) {}
var busy = document.readyState !== 'complete' || fr !== 'complete' ||
	(window.jQuery && jQuery.active > 0) || (window.rcmail && rcmail.busy);
var ents = performance.getEntriesByType('resource');
var last = 0;
for (var i = 0; i < ents.length; i++) last = Math.max(last, ents[i].responseEnd);
var nav = performance.getEntriesByType('navigation')[0];
if (nav) last = Math.max(last, nav.loadEventEnd || nav.responseEnd);
var rows = document.querySelectorAll('#messagelist tbody tr').length;
return {busy: !!busy, n: ents.length, end: performance.timeOrigin + last, url: location.href,
	mbox: (window.rcmail && rcmail.env) ? (rcmail.env.mailbox || '') : '', rows: rows, frame: fsrc};`

// pageState is pageStateJS's answer.
type pageState struct {
	Busy  bool    `json:"busy"`
	N     int     `json:"n"`
	End   float64 `json:"end"` // ms since the epoch
	URL   string  `json:"url"`
	Mbox  string  `json:"mbox"`
	Rows  int     `json:"rows"`
	Frame string  `json:"frame"`
}

// scenarioResult is one run of the scenario in one mode.
type scenarioResult struct {
	Mode          string
	Rep           int
	User          string
	Steps         []time.Duration // login, 5 messages, folder, back, logout
	Total         time.Duration   // first click to last response
	PHPRequests   int
	BackendLogins int
	Sessions      []*relaySession // nil without a relay
	Hits, Misses  []time.Duration // LOGIN latency by cache outcome, where known
	Unclassified  []time.Duration // LOGIN latency where hits cannot be told from misses
}

// runScenario logs in, opens messagesOpened messages in the preview pane,
// switches to secondFolder and back, and logs out, timing each step from
// its click to its last response. With shot set it saves a PNG of the
// inbox after the messages were opened.
func runScenario(cd *chromedriver, base, user, password, shot string) ([]time.Duration, time.Duration, error) {
	if err := cd.DeleteCookies(); err != nil {
		return nil, 0, err
	}
	if err := cd.Navigate(base + loginPagePath); err != nil {
		return nil, 0, err
	}
	if _, err := waitPage(cd, time.Now(), func(s pageState) bool { return strings.Contains(s.URL, "_task=login") }); err != nil {
		return nil, 0, fmt.Errorf("login page: %w", err)
	}
	if err := cd.Exec(`document.getElementById('rcmloginuser').value = arguments[0];
document.getElementById('rcmloginpwd').value = arguments[1];`, nil, user, password); err != nil {
		return nil, 0, err
	}
	var steps []time.Duration
	first := time.Now()
	var last float64
	step := func(name string, act func() error, done func(pageState) bool) error {
		t0 := time.Now()
		if err := act(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s, err := waitPage(cd, t0, done)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		steps = append(steps, time.Duration((s.End-float64(t0.UnixNano())/1e6)*float64(time.Millisecond)))
		last = s.End
		return nil
	}
	err := step("login", func() error {
		return cd.Exec(`document.getElementById('rcmloginsubmit').click();`, nil)
	}, func(s pageState) bool { return strings.Contains(s.URL, "_task=mail") && s.Rows > 0 })
	if err != nil {
		return nil, 0, err
	}
	for i := 1; i <= messagesOpened; i++ {
		sel := fmt.Sprintf("#messagelist tbody tr:nth-child(%d)", i)
		var uid string
		if err := cd.Exec(`var r = document.querySelector(arguments[0]); return r ? String(r.uid || r.id.replace('rcmrow', '')) : '';`, &uid, sel); err != nil || uid == "" {
			return nil, 0, fmt.Errorf("message row %d: %v", i, err)
		}
		err := step("open message "+uid, func() error { return cd.Click(sel) },
			func(s pageState) bool {
				return strings.Contains(s.Frame, "_uid="+uid+"&") || strings.HasSuffix(s.Frame, "_uid="+uid)
			})
		if err != nil {
			return nil, 0, err
		}
	}
	if shot != "" {
		time.Sleep(screenshotDelay)
		png, err := cd.Screenshot()
		if err != nil {
			return nil, 0, err
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			return nil, 0, err
		}
	}
	for _, box := range []string{secondFolder, "INBOX"} {
		sel := fmt.Sprintf(`#mailboxlist a[rel="%s"]`, box)
		err := step("folder "+box, func() error { return cd.Click(sel) },
			func(s pageState) bool { return s.Mbox == box && s.Rows > 0 })
		if err != nil {
			return nil, 0, err
		}
	}
	// Roundcube answers ?_task=logout with the login page itself.
	err = step("logout", func() error { return cd.Click("a.logout") },
		func(s pageState) bool {
			return strings.Contains(s.URL, "_task=logout") || strings.Contains(s.URL, "_task=login")
		})
	if err != nil {
		return nil, 0, err
	}
	total := time.Duration((last - float64(first.UnixNano())/1e6) * float64(time.Millisecond))
	return steps, total, nil
}

// waitPage polls the page until done holds, nothing is busy and no new
// resource has appeared for quietPeriod.
func waitPage(cd *chromedriver, t0 time.Time, done func(pageState) bool) (pageState, error) {
	var prev pageState
	stableSince := time.Time{}
	for time.Since(t0) < stepTimeout {
		var s pageState
		if err := cd.Exec(pageStateJS, &s); err != nil {
			// A navigation in progress can fail a script; try again.
			time.Sleep(pollInterval)
			continue
		}
		if done(s) && !s.Busy && s.N == prev.N && s.URL == prev.URL && math.Abs(s.End-prev.End) < 0.001 {
			if stableSince.IsZero() {
				stableSince = time.Now()
			} else if time.Since(stableSince) >= quietPeriod {
				return s, nil
			}
		} else {
			stableSince = time.Time{}
		}
		prev = s
		time.Sleep(pollInterval)
	}
	return prev, fmt.Errorf("page not settled within %v (url %s, mailbox %q, rows %d, frame %s)", stepTimeout, prev.URL, prev.Mbox, prev.Rows, prev.Frame)
}

// Click finds the element matching a CSS selector and clicks it with
// WebDriver's element click (real mouse events at its centre).
func (cd *chromedriver) Click(selector string) error {
	v, err := cd.sess(http.MethodPost, "/element", map[string]string{"using": "css selector", "value": selector})
	if err != nil {
		return err
	}
	var el map[string]string
	if err := json.Unmarshal(v, &el); err != nil || el[webElementKey] == "" {
		return fmt.Errorf("element %s: %s", selector, v)
	}
	_, err = cd.sess(http.MethodPost, "/element/"+el[webElementKey]+"/click", map[string]any{})
	return err
}
