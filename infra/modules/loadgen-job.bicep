// The load generator as a Container Apps job (manual trigger): N replicas of the service image run
// `loadgen`, each taking users/N (`--split N`), each writing its JSON report to an Azure Files share
// mounted at /reports. Replicas do not know their index, so a report is named after the replica's
// host name; `loadgen merge /reports/*.json` combines them (docs/deployment.md).

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Name of the Container Apps environment the job runs in.')
param containerAppsEnvironmentName string

@description('Image with /usr/local/bin/loadgen and the profiles in /app/loadtests/profiles (the service image).')
param image string

@description('Resource id of the identity used to pull the image.')
param identityId string

@description('Login server of the container registry.')
param registryLoginServer string

@description('Base URL of the service under load (goose --host).')
param appUrl string

@description('Load profile to run (file name without .toml in loadtests/profiles/).')
param profile string = 'staged'

@minValue(1)
@maxValue(20)
@description('Parallel replicas; each runs users/N.')
param replicas int = 1

@description('Multiplier for the profile\'s user counts (--scale), as a decimal string.')
param scale string = '1'

@description('Seconds a replica may run before it is stopped.')
param replicaTimeoutSeconds int = 3600

var shareName = 'loadgen-reports'
var storageName = 'loadgenreports'

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' existing = {
  name: containerAppsEnvironmentName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stlg${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Container Apps mounts Azure Files (SMB) with the account key.
    allowSharedKeyAccess: true
  }
}

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = {
  parent: fileService
  name: shareName
  properties: {
    shareQuota: 5
  }
}

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2024-03-01' = {
  parent: environment
  name: storageName
  properties: {
    azureFile: {
      accountName: storage.name
      accountKey: storage.listKeys().keys[0].value
      shareName: share.name
      accessMode: 'ReadWrite'
    }
  }
}

// `exec` so loadgen gets the signals; $(hostname) is the replica name, unique per execution.
var loadgenCommand = 'exec /usr/local/bin/loadgen --profile ${profile} --host ${appUrl} --scale ${scale} --split ${replicas} --json /reports/$(hostname).json --report-file /reports/$(hostname).html'

resource job 'Microsoft.App/jobs@2024-03-01' = {
  name: 'caj-loadgen-${resourceToken}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Manual'
      replicaTimeout: replicaTimeoutSeconds
      // A breached threshold makes loadgen exit non-zero: report it, do not run the load again.
      replicaRetryLimit: 0
      manualTriggerConfig: {
        parallelism: replicas
        replicaCompletionCount: replicas
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'loadgen'
          image: image
          command: [
            '/bin/sh'
          ]
          args: [
            '-c'
            loadgenCommand
          ]
          // LOADGEN_PROFILES_DIR comes from the image (Dockerfile).
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          volumeMounts: [
            {
              volumeName: 'reports'
              mountPath: '/reports'
            }
          ]
        }
      ]
      volumes: [
        {
          name: 'reports'
          storageType: 'AzureFile'
          storageName: environmentStorage.name
          // The image runs as uid 10001; SMB mounts are root-owned unless told otherwise.
          mountOptions: 'uid=10001,gid=10001,dir_mode=0750,file_mode=0640'
        }
      ]
    }
  }
}

output jobName string = job.name
output storageAccountName string = storage.name
output shareName string = share.name
