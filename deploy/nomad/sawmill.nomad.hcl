# Sawmill's indexers, `query` and the UI on Nomad: two indexer groups of two replicas each,
# registered in Consul as `indexer-g0` and `indexer-g1`, so that
# `dnssrv+http://_indexer-g0._tcp.service.consul` lists a group's replicas (address and
# port of each; Consul leaves out instances whose check is critical). The shippers run from
# shipper.nomad.hcl (a system job: Nomad takes one job per file).
#
#   nomad job run deploy/nomad/sawmill.nomad.hcl
#
# WHAT THIS EXPOSES. Plain HTTP, no tokens, no sign-in: anyone who reaches the clients'
# dynamic ports reads every log line (as the Swarm stack without tls.yml; see the README's
# "Across the network" to add TLS, tokens and --users-file through `template` blocks).
# Find `query` and the UI through Consul (`sawmill-query.service.consul`, SRV for the port)
# or put a load balancer in front.
#
# The containers must resolve `.consul` names (see shipper.nomad.hcl). Nomad 1.5 or later
# (`datacenters = ["*"]`: every datacenter).
job "sawmill" {
  type        = "service"
  datacenters = ["*"]

  # One replica of a group at a time, the old one stopped first.
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "10m"
    auto_revert      = true
  }

  group "indexer-g0" {
    count = 2

    # The two replicas of a group on different clients.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # The data directory: the alloc's shared data dir (mounted below), kept for the
    # replacement of an allocation on the same client and migrated when it moves (a
    # replica that comes back empty is filled by repair from its peer).
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 20480
    }

    network {
      port "http" {
        to = 7280
      }
    }

    service {
      name     = "indexer-g0"
      port     = "http"
      provider = "consul"
      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "indexer" {
      driver = "docker"

      config {
        image = "sawmill:latest"
        ports = ["http"]
        args = [
          "indexer",
          "--group=g0",
          "--peer=dnssrv+http://_indexer-g0._tcp.service.consul",
        ]
        # The allocation's data dir, at the image's data path (a path inside the
        # allocation needs no `volumes { enabled = true }`).
        volumes = ["../alloc/data:/var/lib/sawmill"]
      }

      env {
        SAWMILL_LISTEN = "0.0.0.0:7280"
        # Plain HTTP off loopback is refused unless said.
        SAWMILL_INSECURE = "true"
        SAWMILL_DATA     = "/var/lib/sawmill"
      }

      # Stopping commits everything acknowledged after up to 10 s for requests in flight.
      kill_timeout = "30s"

      # As the Kubernetes manifests (from the README's Benchmarks: a peak RSS of 378 to
      # 485 MiB under heavy searches on 2 cores).
      resources {
        cpu        = 1000
        memory     = 512
        memory_max = 1024
      }
    }
  }

  group "indexer-g1" {
    count = 2

    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 20480
    }

    network {
      port "http" {
        to = 7280
      }
    }

    service {
      name     = "indexer-g1"
      port     = "http"
      provider = "consul"
      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "indexer" {
      driver = "docker"

      config {
        image = "sawmill:latest"
        ports = ["http"]
        args = [
          "indexer",
          "--group=g1",
          "--peer=dnssrv+http://_indexer-g1._tcp.service.consul",
        ]
        volumes = ["../alloc/data:/var/lib/sawmill"]
      }

      env {
        SAWMILL_LISTEN   = "0.0.0.0:7280"
        SAWMILL_INSECURE = "true"
        SAWMILL_DATA     = "/var/lib/sawmill"
      }

      kill_timeout = "30s"

      resources {
        cpu        = 1000
        memory     = 512
        memory_max = 1024
      }
    }
  }

  group "query" {
    count = 1

    network {
      port "http" {
        to = 7281
      }
    }

    service {
      name     = "sawmill-query"
      port     = "http"
      provider = "consul"
      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "query" {
      driver = "docker"

      config {
        image = "sawmill:latest"
        ports = ["http"]
        args = [
          "query",
          "--listen=0.0.0.0:7281",
          "--insecure",
          "--indexer=dnssrv+http://_indexer-g0._tcp.service.consul",
          "--indexer=dnssrv+http://_indexer-g1._tcp.service.consul",
        ]
      }

      resources {
        cpu        = 250
        memory     = 128
        memory_max = 512
      }
    }
  }

  group "ui" {
    count = 1

    network {
      port "http" {
        to = 7279
      }
    }

    service {
      name     = "sawmill-ui"
      port     = "http"
      provider = "consul"
      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "ui" {
      driver = "docker"

      config {
        image = "sawmill:latest"
        ports = ["http"]
        args = [
          "ui",
          "--listen=0.0.0.0:7279",
          "--insecure",
          "--indexer=dnssrv+http://_indexer-g0._tcp.service.consul",
          "--indexer=dnssrv+http://_indexer-g1._tcp.service.consul",
        ]
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 512
      }
    }
  }
}
