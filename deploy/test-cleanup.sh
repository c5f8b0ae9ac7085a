# Sourced by deploy/test.sh and deploy/soak.sh: removes what test
# deployments leave behind when their process is killed before it can clean
# up (containers labelled orchestrator.test, orch-mh-* networks, and the
# test agents' cgroups under orchestrator-test). Nothing else is touched.
cleanup_test_leftovers() {
    docker ps -aq --filter label=orchestrator.test | xargs -r docker rm -f -v >/dev/null 2>&1 || true
    docker network ls -q --filter name=orch-mh- | xargs -r docker network rm >/dev/null 2>&1 || true
    # Processes of killed agents' jobs first, then the cgroups themselves.
    for d in /sys/fs/cgroup/*/orchestrator-test /sys/fs/cgroup/orchestrator-test; do
        [[ -d $d ]] || continue
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        sleep 0.2
        find "$d" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
    done
}
