<?php
/*
 * rcdriver.php: drives Roundcube's own IMAP library (rcube_imap_generic,
 * Debian package roundcube-core) the way one Roundcube page request does,
 * N times: connect, log in, list folders, select INBOX, sort or search it,
 * fetch the headers of a few messages, fetch one body, log out.
 *
 * Usage: php rcdriver.php HOST PORT USER ITERATIONS [AUTH]
 *   The password is the first line of standard input (never an argument:
 *   arguments are visible in ps).
 *   AUTH is Roundcube's imap_auth_type: CHECK (default; Roundcube's own
 *   choice, AUTHENTICATE PLAIN with SASL-IR when offered), PLAIN or LOGIN.
 *
 * Prints one JSON object per line and iteration:
 *   {"i":1,"ok":true,"login_ms":1.9,"total_ms":8.1,"commands":9,
 *    "caps":[...],"messages":[{"uid":1,"subject":"..."}],
 *    "body_bytes":1024,"classes":[...],"errors":[]}
 * "commands" counts the tagged commands the library sent (its tag counter),
 * "caps" are the capabilities it holds right after login.
 *
 * Bootstrap: program/lib/Roundcube/bootstrap.php and nothing else (no rcube
 * instance, no config, no database); its autoloader loads the classes the
 * library names (rcube_result_index, rcube_message_header, rcube_utils ...)
 * on demand, and "classes" reports which ones were.
 */

error_reporting(E_ALL & ~E_DEPRECATED);
ini_set('display_errors', 'stderr');

$lib = getenv('RCDRIVER_LIB') ?: '/usr/share/roundcube/program/lib/Roundcube';

// The one bootstrap include: bootstrap.php defines the helper functions
// the library's classes call (array_first, in_array_nocase ...) and
// registers Roundcube's class autoloader. No rcube instance, no config,
// no database.
require_once $lib . '/bootstrap.php';

if ($argc < 5) {
    fwrite(STDERR, "usage: php rcdriver.php HOST PORT USER ITERATIONS [AUTH]\n");
    exit(2);
}
list(, $host, $port, $user, $iterations) = $argv;
$auth = strtoupper($argv[5] ?? 'CHECK');
$password = rtrim(fgets(STDIN) ?: '', "\r\n");

// How many messages a page shows headers of (a small list page).
const HEADER_COUNT = 5;

/** Exposes the library's tag counter and capability list. */
class driven_imap extends rcube_imap_generic
{
    public function commands()
    {
        return $this->cmd_num;
    }

    public function capabilities()
    {
        return array_values($this->capability);
    }
}

function ms($t0)
{
    return round((microtime(true) - $t0) * 1000, 3);
}

/** One page request; returns the iteration's record. */
function page_request($i, $host, $port, $user, $password, $auth)
{
    $rec = ['i' => $i, 'ok' => false, 'login_ms' => null, 'total_ms' => null,
        'commands' => 0, 'caps' => [], 'messages' => [], 'body_bytes' => 0,
        'folders' => 0, 'errors' => []];
    $imap = new driven_imap();
    $t0 = microtime(true);
    // Roundcube's defaults (rcube_imap::connect): CHECK picks the best
    // method the server offers, timeout, no ident.
    $opts = ['port' => (int)$port, 'auth_type' => $auth, 'timeout' => 10,
        'ssl_mode' => false, 'force_caps' => false];
    // connect() covers the greeting and the login; the greeting is read
    // before the clock for login_ms starts in a real Roundcube too, but
    // rcube_imap_generic gives no hook in between, so login_ms here is
    // TCP connect + greeting + authentication.
    $tl = microtime(true);
    if (!$imap->connect($host, $user, $password, $opts)) {
        $rec['errors'][] = 'connect: ' . $imap->error;
        $rec['commands'] = $imap->commands();
        $rec['total_ms'] = ms($t0);
        return $rec;
    }
    $rec['login_ms'] = ms($tl);
    $rec['caps'] = $imap->capabilities();

    // Folder list (LIST-EXTENDED with SUBSCRIBED when offered, else LSUB).
    $folders = $imap->listSubscribed('', '*');
    if (!is_array($folders)) {
        $rec['errors'][] = 'list: ' . $imap->error;
    } else {
        $rec['folders'] = count($folders);
    }

    if (!$imap->select('INBOX')) {
        $rec['errors'][] = 'select: ' . $imap->error;
    } else {
        // The message list: SORT when offered (Roundcube's default sort
        // column is arrival), else SEARCH.
        if ($imap->getCapability('SORT')) {
            $index = $imap->sort('INBOX', 'ARRIVAL', 'ALL UNDELETED', true);
        } else {
            $index = $imap->search('INBOX', 'ALL UNDELETED', true);
        }
        $uids = $index->get();
        if ($index->is_error()) {
            $rec['errors'][] = 'sort/search: ' . $imap->error;
        }
        $uids = array_slice($uids, -HEADER_COUNT);
        if ($uids) {
            $headers = $imap->fetchHeaders('INBOX', $uids, true);
            if (!is_array($headers)) {
                $rec['errors'][] = 'fetch headers: ' . $imap->error;
            } else {
                foreach ($headers as $h) {
                    $rec['messages'][] = ['uid' => (int)$h->uid, 'subject' => (string)$h->subject];
                }
                usort($rec['messages'], function ($a, $b) { return $a['uid'] - $b['uid']; });
            }
            $body = $imap->handlePartBody('INBOX', $uids[0], true, 'TEXT');
            if ($body === false || $body === null) {
                $rec['errors'][] = 'fetch body: ' . $imap->error;
            } else {
                $rec['body_bytes'] = strlen($body);
            }
        }
    }
    $imap->closeConnection(); // LOGOUT
    $rec['commands'] = $imap->commands();
    $rec['total_ms'] = ms($t0);
    $rec['ok'] = !$rec['errors'];
    return $rec;
}

for ($i = 1; $i <= (int)$iterations; $i++) {
    $rec = page_request($i, $host, $port, $user, $password, $auth);
    $rec['classes'] = array_values(array_filter(get_declared_classes(), function ($c) {
        return strncmp($c, 'rcube', 5) === 0;
    }));
    echo json_encode($rec, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
}
