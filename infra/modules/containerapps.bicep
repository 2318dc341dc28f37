// The Container Apps environment (VNet-integrated, workload profiles, logs to Log Analytics) and the
// chaos-lab container app. The app's environment variables are exactly the names the service reads
// (tests/infra/azd_outputs.py checks both directions).

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Name of the container app (also passed to it as SERVICE_APP_NAME).')
param appName string

@description('Image to run; empty for a public placeholder until `azd deploy` pushes the real one.')
param appImageName string = ''

@allowed([
  'Single'
  'Multiple'
])
@description('Revision mode of the container app.')
param revisionsMode string = 'Multiple'

@description('Resource id of the subnet delegated to Microsoft.App/environments.')
param infrastructureSubnetId string

@description('Name of the Log Analytics workspace the environment sends logs to.')
param logAnalyticsWorkspaceName string

@description('Application Insights connection string the service exports telemetry to.')
param applicationInsightsConnectionString string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID selects it for the Azure SDK).')
param identityClientId string

@description('Object id of that identity (the Redis username with Entra ID auth).')
param identityPrincipalId string

@description('Login server of the container registry.')
param registryLoginServer string

@description('Host name of Azure Managed Redis.')
param redisHost string

@description('Port of Azure Managed Redis.')
param redisPort int

@description('Name of the NSG the azure network fault backend writes rules to.')
param nsgName string

@description('Container URL of the fleet\'s chaos store (env CHAOS_STORE_URL), reached with the app identity.')
param chaosStoreUrl string

@secure()
@description('Bearer token for the script endpoints.')
param chaosApiToken string

@description('CPU cores per replica (the load fault targets a share of this).')
param cpu string = '1.0'

@description('Memory per replica; must hold the 1000 MB "high" memory load.')
param memory string = '2Gi'

@minValue(1)
@description('Minimum replicas (at least 1: the lab is always up; 2 gives the fleet scenarios, such as replica-hang, a replica to hang and one to keep serving).')
param minReplicas int = 2

@description('Maximum replicas.')
param maxReplicas int = 3

// Public placeholder used by the first provision, before azd has built and pushed the image.
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var image = empty(appImageName) ? placeholderImage : appImageName
var appPort = 8000

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsWorkspaceName
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-${resourceToken}'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logAnalytics.properties.customerId
        sharedKey: logAnalytics.listKeys().primarySharedKey
      }
    }
    vnetConfiguration: {
      infrastructureSubnetId: infrastructureSubnetId
      internal: false
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  // azd finds the resource to deploy the `app` service to by this tag.
  tags: union(tags, {
    'azd-service-name': 'app'
  })
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
      activeRevisionsMode: revisionsMode
      ingress: {
        external: true
        targetPort: appPort
        transport: 'auto'
        allowInsecure: false
        // The newest revision takes the traffic, as in single-revision mode; a deploy fault's
        // undo pins it to the previous revision by name until the next provision.
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
      secrets: [
        {
          name: 'chaos-api-token'
          value: chaosApiToken
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'app'
          image: image
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: [
            {
              name: 'APP_PORT'
              value: string(appPort)
            }
            {
              name: 'REDIS_HOST'
              value: redisHost
            }
            {
              name: 'REDIS_PORT'
              value: string(redisPort)
            }
            {
              name: 'REDIS_SSL'
              value: 'true'
            }
            {
              name: 'REDIS_AUTH'
              value: 'entra'
            }
            {
              name: 'REDIS_USERNAME'
              value: identityPrincipalId
            }
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'NETWORK_FAULT_BACKEND'
              value: 'azure'
            }
            {
              name: 'AZURE_SUBSCRIPTION_ID'
              value: subscription().subscriptionId
            }
            {
              name: 'AZURE_RESOURCE_GROUP'
              value: resourceGroup().name
            }
            {
              name: 'AZURE_NSG_NAME'
              value: nsgName
            }
            {
              name: 'AZURE_NSG_RULE_PORT'
              value: string(redisPort)
            }
            {
              name: 'SERVICE_APP_NAME'
              value: appName
            }
            {
              // The replicas share runs' safety state through it (docs/fleet.md). Each replica's
              // name comes from CONTAINER_APP_REPLICA_NAME, which Container Apps sets itself.
              name: 'CHAOS_STORE_URL'
              value: chaosStoreUrl
            }
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              value: applicationInsightsConnectionString
            }
            {
              name: 'OTEL_SERVICE_NAME'
              value: 'chaos-lab'
            }
            {
              name: 'CHAOS_API_TOKEN'
              secretRef: 'chaos-api-token'
            }
          ]
          probes: [
            {
              // Liveness is a TCP probe: a hung app (POST /chaos/hang) still accepts connections, so
              // only readiness takes the replica out of traffic; a dead process gets restarted.
              type: 'Liveness'
              tcpSocket: {
                port: appPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/health'
                port: appPort
                scheme: 'HTTP'
              }
              initialDelaySeconds: 3
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '100'
              }
            }
          }
        ]
      }
    }
  }
}

output environmentName string = environment.name
output appName string = app.name
output appUrl string = 'https://${app.properties.configuration.ingress.fqdn}'
output image string = image
