"""The operators' actions on a campaign, each one command: load a program, import the roster
and completions, launch and schedule waves, extend, exempt, complete, pause, participants'
requests; and the scheduler's pass that queues what comes due.
"""
