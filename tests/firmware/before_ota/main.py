# tswarm node: runs after every reset and every wake from deep sleep (see node.py). Whatever
# fails, the board deep-sleeps and tries again at the next wake; only a 423 (halted) keeps it
# awake, for netconf.awake seconds, or until Ctrl-C leaves the REPL free to reflash it.
try:
    import node
except Exception as exc:  # node.py missing or broken: sleep all the same
    print("tswarm: cannot import node.py:", repr(exc))
    import machine
    import time

    try:
        machine.deepsleep(300000)  # an ESP8266 wakes through GPIO16 here too
    except Exception:
        time.sleep(300)
        machine.reset()
else:
    config = node.loadConfig()
    status = node.wake(config)
    if status == node.HALTED:
        node.stayAwake(node.awakeSeconds(config))
    node.goToSleep(node.sleepSeconds(config))
