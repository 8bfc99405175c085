package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"switchboard/internal/testbed"
)

// WebDriver timeouts.
const (
	chromedriverStartTimeout = 15 * time.Second
	webdriverRequestTimeout  = 60 * time.Second
)

// chromedriver is a running chromedriver and one headless Chromium
// session, spoken to through the W3C WebDriver HTTP API.
type chromedriver struct {
	base    string // http://ip:port
	session string
	cmd     *exec.Cmd
	hc      http.Client
}

// startChromedriver starts chromedriver on a loopback port and opens a
// headless Chromium session of the given window size.
func startChromedriver(ip, logPath string, width, height int) (*chromedriver, error) {
	port, err := testbed.FreePort(ip)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cd := &chromedriver{base: "http://" + ip + ":" + strconv.Itoa(port), hc: http.Client{Timeout: webdriverRequestTimeout}}
	cd.cmd = exec.Command("chromedriver", "--port="+strconv.Itoa(port), "--allowed-ips=", "--log-path="+logPath)
	cd.cmd.Stdout, cd.cmd.Stderr = logf, logf
	cd.cmd.SysProcAttr = testbed.ChildAttr()
	if err := cd.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start chromedriver: %w", err)
	}
	deadline := time.Now().Add(chromedriverStartTimeout)
	for {
		if _, err := cd.call(http.MethodGet, "/status", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cd.Close()
			return nil, fmt.Errorf("chromedriver did not answer within %v", chromedriverStartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": "/usr/bin/chromium",
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--no-first-run", "--disable-extensions", "--disable-background-networking",
				"--disable-component-update", "--disable-sync", "--metrics-recording-only",
				"--no-proxy-server", fmt.Sprintf("--window-size=%d,%d", width, height)},
		},
	}}}
	v, err := cd.call(http.MethodPost, "/session", caps)
	if err != nil {
		cd.Close()
		return nil, fmt.Errorf("new session: %w", err)
	}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(v, &s); err != nil || s.SessionID == "" {
		cd.Close()
		return nil, fmt.Errorf("new session: %s", v)
	}
	cd.session = s.SessionID
	return cd, nil
}

// Close ends the session and chromedriver (and its Chromium).
func (cd *chromedriver) Close() {
	if cd.session != "" {
		cd.call(http.MethodDelete, "/session/"+cd.session, nil)
	}
	pgid := cd.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cd.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
}

// call makes one WebDriver request and returns the "value" member.
func (cd *chromedriver) call(method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), webdriverRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, cd.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cd.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("webdriver %s %s: %s", method, path, data)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("webdriver %s %s: %s: %s", method, path, resp.Status, env.Value)
	}
	return env.Value, nil
}

// sess makes a request under the session.
func (cd *chromedriver) sess(method, path string, body any) (json.RawMessage, error) {
	return cd.call(method, "/session/"+cd.session+path, body)
}

// Navigate loads url and waits for the page load.
func (cd *chromedriver) Navigate(url string) error {
	_, err := cd.sess(http.MethodPost, "/url", map[string]string{"url": url})
	return err
}

// Exec runs JavaScript in the page and decodes its result into out
// (which may be nil).
func (cd *chromedriver) Exec(script string, out any, args ...any) error {
	if args == nil {
		args = []any{}
	}
	v, err := cd.sess(http.MethodPost, "/execute/sync", map[string]any{"script": script, "args": args})
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(v, out)
}

// Screenshot returns a PNG of the viewport.
func (cd *chromedriver) Screenshot() ([]byte, error) {
	v, err := cd.sess(http.MethodGet, "/screenshot", nil)
	if err != nil {
		return nil, err
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(s)
}

// DeleteCookies forgets every cookie (a fresh browser for each scenario).
func (cd *chromedriver) DeleteCookies() error {
	_, err := cd.sess(http.MethodDelete, "/cookie", nil)
	return err
}
