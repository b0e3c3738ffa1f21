<?php
// runbox's warm start for `php main.php ARGS` (the agent's prepare_warm starts it as
// `php /opt/runbox/warm/php.php FD` before the job arrives). It reads the program's name and
// arguments from pipe FD, closes it, sets what the CLI sets for a script ($argv, $argc and
// $_SERVER's argv, argc, script names and request time), and requires the file from the
// global scope. Everything else here is local to a closure, so the program's globals hold none of it.
(static function (): void {
    $control = fopen('php://fd/' . (int) $GLOBALS['argv'][1], 'rb');
    $data = stream_get_contents($control);
    fclose($control);
    if ($data === '') {
        exit(0);
    }
    $argv = explode("\0", $data);
    $GLOBALS['argv'] = $_SERVER['argv'] = $argv;
    $GLOBALS['argc'] = $_SERVER['argc'] = count($argv);
    foreach (['PHP_SELF', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_TRANSLATED'] as $name) {
        $_SERVER[$name] = $argv[0];
    }
    $_SERVER['REQUEST_TIME_FLOAT'] = microtime(true);
    $_SERVER['REQUEST_TIME'] = (int) $_SERVER['REQUEST_TIME_FLOAT'];
})();
require $_SERVER['SCRIPT_FILENAME'][0] === '/' ? $_SERVER['SCRIPT_FILENAME'] : getcwd() . '/' . $_SERVER['SCRIPT_FILENAME'];
