# The Sawmill shipper on every Nomad client (a system job), as in the Swarm stack: it serves
# the syslog socket in the host directory /run/sawmill and follows every container's
# stdout/stderr through the Docker Engine API. Run sawmill.nomad.hcl (the indexers, query
# and the UI) too; Nomad takes one job per file.
#
#   nomad job run deploy/nomad/shipper.nomad.hcl
#
# The clients' Docker plugin must allow host bind mounts (the socket directory, the Docker
# socket, the shipper's state):
#   plugin "docker" { config { volumes { enabled = true } } }
# Applications log through the socket by mounting the directory (not the socket: a
# restarted shipper makes a new one) and sending to /run/sawmill/dev-log:
#   config { volumes = ["/run/sawmill:/run/sawmill"] }
#
# The indexers are found through Consul's DNS (`dnssrv+http://_indexer-g0._tcp.service.consul`,
# the SRV records of the Consul services sawmill.nomad.hcl registers): the containers must
# resolve `.consul` names, e.g. through a resolver on each client that forwards `.consul` to
# the local Consul agent (Consul's "DNS forwarding" guide), or with `dns_servers` below.
job "sawmill-shipper" {
  type        = "system"
  datacenters = ["*"]

  group "shipper" {
    restart {
      attempts = 10
      interval = "5m"
      delay    = "2s"
      mode     = "delay"
    }

    task "shipper" {
      driver = "docker"
      # Root: it reads the Docker socket and makes its socket in a host directory.
      user = "0:0"

      config {
        image = "sawmill:latest"
        # The node's name as the records' `host`, not the container's id.
        hostname = "${attr.unique.hostname}"
        args = [
          "shipper",
          "--indexer=dnssrv+http://_indexer-g0._tcp.service.consul",
          "--indexer=dnssrv+http://_indexer-g1._tcp.service.consul",
          "--syslog-socket=/run/sawmill/dev-log",
          "--docker",
          "--state=/var/lib/sawmill/shipper",
          "--metrics=127.0.0.1:7290",
        ]
        volumes = [
          "/run/sawmill:/run/sawmill",
          "/var/run/docker.sock:/var/run/docker.sock",
          "/var/lib/sawmill-shipper:/var/lib/sawmill",
        ]
      }

      # Its stop delivers what it holds for up to 5 s.
      kill_timeout = "15s"

      # The metrics listener (and /healthz) stays on the container's loopback, as in the
      # Swarm stack (it is plain HTTP): a script check asks from inside the container with
      # the image's own client.
      service {
        name     = "sawmill-shipper"
        provider = "consul"
        check {
          name     = "healthz"
          type     = "script"
          command  = "sawmill"
          args     = ["health", "http://127.0.0.1:7290/healthz"]
          interval = "10s"
          timeout  = "5s"
        }
      }

      # The shipper benchmark's target is a peak RSS of at most 40 MiB; on top of that the
      # queue (16 MiB) and one backlog per indexer replica (64 MiB each, 4 replicas) while
      # replicas are away (README, "Benchmarks" and the shipper's flags).
      resources {
        cpu        = 100
        memory     = 64
        memory_max = 384
      }
    }
  }
}
