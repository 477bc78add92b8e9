# tswarm node: runs after every reset and every wake from deep sleep (see node.py).
import node

config = node.loadConfig()
status = node.wake(config)
if status != node.HALTED:
    node.goToSleep(*node.sleepSettings(config))
# 423: the node is halted; stay awake with the REPL free, so it can be reflashed.
